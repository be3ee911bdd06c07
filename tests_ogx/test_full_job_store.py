"""A job store on a full disk (a small tmpfs): the job it cannot record is refused with 507, and the server answers
every later request as before, about that job too."""

from pathlib import Path

import openai
import pytest

from llama_stack_provider_trl.demo.small_disk import fill_up, small_disk

from conftest import client_for, ogx_server
from helpers import dpo, openai_preferences, upload


def test_a_job_the_full_store_cannot_record_is_507_and_later_requests_about_it_are_answered(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    home, store_disk = tmp_path / "home", tmp_path / "store-disk"
    with small_disk(store_disk, 1 << 20) as refused:
        if refused:
            pytest.skip(refused)
        with ogx_server(home, job_store_path=str(store_disk / "jobs.db")) as server:
            client = client_for(server)
            file_id = upload(client, openai_preferences(preference_rows[:4]))
            filler = fill_up(store_disk)

            with pytest.raises(openai.InternalServerError) as refused_job:
                client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())
            filler.unlink()

            assert refused_job.value.status_code == 507
            assert "the job store cannot record the job" in refused_job.value.message
            [left] = list((home / "ogx" / "jobs").iterdir())  # the directory the refused job had claimed
            assert client.fine_tuning.jobs.list().data == []
            with pytest.raises(openai.NotFoundError):
                client.fine_tuning.jobs.retrieve(left.name)
            with pytest.raises(openai.NotFoundError, match="no fine-tuned model or checkpoint"):  # not a 500
                client.fine_tuning.jobs.create(
                    model=f"ft:{tiny_model.name}:trl:{left.name}", training_file=file_id, method=dpo()
                )
