"""A job store on a full disk (a small tmpfs): the job it cannot record is refused with 507, and the server answers
every later request as before, about that job too."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llama_stack_provider_trl.demo.small_disk import small_disk as mounted_small_disk

from conftest import client_for, ogx_server
from helpers import dpo, openai_preferences, upload

DISK_BYTES = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_small_disk(tmp_path / "small-disk", DISK_BYTES) as refused:
        if refused:
            pytest.skip(refused)
        yield tmp_path / "small-disk"


def test_a_job_the_full_store_cannot_record_is_507_and_later_requests_about_it_are_answered(
    small_disk: Path, tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    home = tmp_path / "home"
    with ogx_server(home, job_store_path=str(small_disk / "jobs.db")) as server:
        client = client_for(server)
        file_id = upload(client, openai_preferences(preference_rows[:4]))
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)  # until the disk is full

        with pytest.raises(openai.InternalServerError) as refused:
            client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())
        filler.unlink()

        assert refused.value.status_code == 507 and "the job store cannot record the job" in refused.value.message
        [left] = list((home / "ogx" / "jobs").iterdir())  # the directory the refused job had claimed
        assert client.fine_tuning.jobs.list().data == []
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve(left.name)
        with pytest.raises(openai.NotFoundError, match="no fine-tuned model or checkpoint"):  # not a 500
            client.fine_tuning.jobs.create(
                model=f"ft:{tiny_model.name}:trl:{left.name}", training_file=file_id, method=dpo()
            )
