"""A small real disk (a 3 MiB tmpfs) as the output directory: a job whose checkpoints cannot fit is refused at
request time, and jobs that fill the disk anyway fail saying so, with the free space, while the server serves on."""

from collections.abc import Iterator
from pathlib import Path

import llama_stack_client
import pytest

from llama_stack_provider_trl.demo.small_disk import small_disk as mounted_small_disk

from helpers import dpo_request, register_rows, unique, wait_final
from job_fixtures import client_for, server_for

DISK_BYTES = 3 << 20
# Three epoch checkpoints of the tiny model with their optimizer state, and its final model: about 4 MiB.
TOO_BIG = {"n_epochs": 3, "max_steps_per_epoch": 1}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_small_disk(tmp_path / "small-disk", DISK_BYTES) as refused:
        if refused:
            pytest.skip(refused)
        yield tmp_path / "small-disk"


def test_a_job_whose_checkpoints_cannot_fit_is_refused_at_request_time_with_507(
    small_disk: Path, tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    output_dir = small_disk / "jobs"
    with server_for(tmp_path / "home", output_dir=str(output_dir)) as server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows[:8])
        job_uuid = unique("too-big")
        with pytest.raises(llama_stack_client.InternalServerError) as refused:
            client.alpha.post_training.preference_optimize(**dpo_request(job_uuid, tiny_model, dataset_id, **TOO_BIG))

        assert refused.value.status_code == 507
        message = str(refused.value)
        assert "3 epoch checkpoints of" in message and f"the disk holding {output_dir} has 3.0 MiB free" in message
        assert not (output_dir / job_uuid).exists() and client.alpha.post_training.job.list() == []


def test_jobs_that_fill_the_disk_fail_saying_it_is_full_and_the_server_keeps_serving(
    small_disk: Path, tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    """With the request-time check off, two such jobs are accepted: the first fills the disk while saving, the
    second cannot even write its events."""
    output_dir = small_disk / "jobs"
    with server_for(tmp_path / "home", output_dir=str(output_dir), check_disk_space=False) as server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows[:8])
        jobs = [unique("full") for _ in range(2)]
        for job_uuid in jobs:
            client.alpha.post_training.preference_optimize(**dpo_request(job_uuid, tiny_model, dataset_id, **TOO_BIG))

        for job_uuid in jobs:
            status = wait_final(client, job_uuid)
            error = status.resources_allocated["error"]
            assert status.status == "failed"
            assert error.startswith(f"the disk holding {output_dir / job_uuid} is full ("), error
            assert "free of 3.0 MiB)" in error.splitlines()[0]
        assert [j.job_uuid for j in client.alpha.post_training.job.list()] == jobs
