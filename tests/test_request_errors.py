"""Each status the 0.6.1 door answers a bad request with, once on a real server, with a message naming the field.
The rules themselves are checked in-process (test_request_refusals.py)."""

from pathlib import Path
from typing import Any

import httpx
import llama_stack_client
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo_request, register_rows, unique


def _optimize(client: LlamaStackClient, request: dict[str, Any]) -> None:
    client.alpha.post_training.preference_optimize(**request)


@pytest.fixture(scope="module")
def dataset_id(client: LlamaStackClient, preference_rows: list[dict[str, str]]) -> str:
    return register_rows(client, preference_rows)


def test_unknown_dataset_is_404(client: LlamaStackClient, tiny_model: Path) -> None:
    with pytest.raises(llama_stack_client.NotFoundError, match="no-such-dataset"):
        _optimize(client, dpo_request(unique("j"), tiny_model, "no-such-dataset"))


def test_a_job_uuid_whose_directory_an_earlier_server_left_is_409_without_the_servers_path(
    client: LlamaStackClient, stack: StackServer, dataset_id: str, tiny_model: Path
) -> None:
    job_uuid = unique("left")
    (Path(stack.env["TRL_OUTPUT_DIR"]) / job_uuid).mkdir(parents=True)
    with pytest.raises(llama_stack_client.ConflictError) as conflict:
        _optimize(client, dpo_request(job_uuid, tiny_model, dataset_id))
    assert f"a job named '{job_uuid}' already exists" in str(conflict.value)
    assert stack.env["TRL_OUTPUT_DIR"] not in str(conflict.value)


def test_a_missing_local_model_directory_is_the_403_of_any_place_the_server_trains_no_model_from(
    client: LlamaStackClient, dataset_id: str, tmp_path: Path
) -> None:
    with pytest.raises(llama_stack_client.PermissionDeniedError, match=r"finetuned_model: .* is not a model directory"):
        _optimize(client, dpo_request(unique("j"), tmp_path / "absent", dataset_id))


def test_unknown_job_is_404(client: LlamaStackClient) -> None:
    with pytest.raises(llama_stack_client.NotFoundError, match="no-such-job"):
        client.alpha.post_training.job.status(job_uuid="no-such-job")
    with pytest.raises(llama_stack_client.NotFoundError):
        client.alpha.post_training.job.cancel(job_uuid="no-such-job")
    with pytest.raises(llama_stack_client.NotFoundError):
        client.alpha.post_training.job.artifacts(job_uuid="no-such-job")


def test_a_400_keeps_the_keep_alive_connection(stack: StackServer, tiny_model: Path, dataset_id: str) -> None:
    sockets = []
    with httpx.Client(base_url=stack.base_url, headers={"Connection": "keep-alive"}) as http:
        for _ in range(2):
            response = http.post(
                "/v1alpha/post-training/preference-optimize",
                json=dpo_request(unique("j"), tiny_model, dataset_id, n_epochs=0),
            )
            assert response.status_code == 400
            assert "n_epochs" in response.json()["error"]["message"]
            sockets.append(response.extensions["network_stream"].get_extra_info("socket").getsockname())
    assert sockets[0] == sockets[1]  # the second request reused the first request's connection
