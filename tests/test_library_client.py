"""The same DPO flow through LlamaStackAsLibraryClient: the stack runs in this process, the job does not."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_stack.core.library_client import LlamaStackAsLibraryClient

from conftest import RUN_YAML
from helpers import dpo_request, register_rows, unique, wait_final


@pytest.fixture
def library_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlamaStackAsLibraryClient]:
    monkeypatch.setenv("SQLITE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("TRL_OUTPUT_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("TRL_DEVICE", "cpu")
    client = LlamaStackAsLibraryClient(str(RUN_YAML))
    yield client
    client.shutdown()


def test_library_client_returns_before_the_job_finishes_and_the_job_completes(
    library_client: LlamaStackAsLibraryClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(library_client, preference_rows)
    job_uuid = unique("lib")

    library_client.alpha.post_training.preference_optimize(**dpo_request(job_uuid, tiny_model, dataset_id))

    # A job run as a task on the request's event loop would have been drained before the call returned.
    first = library_client.alpha.post_training.job.status(job_uuid=job_uuid)
    assert first.status in ("scheduled", "in_progress")
    final = wait_final(library_client, job_uuid)
    assert final.status == "completed", final.resources_allocated["error"]
    assert [c.identifier for c in final.checkpoints] == [f"{job_uuid}-epoch-1", f"{job_uuid}-final"]
    assert all((Path(c.path) / "config.json").is_file() for c in final.checkpoints)
