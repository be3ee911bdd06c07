"""finetuned_model may name a model registered with the stack's models API (when the stack serves one)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import RUN_YAML
from helpers import dpo_request, register_rows, unique, wait_final


@pytest.fixture(scope="module")
def stack_with_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    """run.yaml plus an inference provider, so the stack has a models API. sentence-transformers registers a
    model without loading it."""
    home = tmp_path_factory.mktemp("home-models")
    config = yaml.safe_load(RUN_YAML.read_text())
    config["apis"].append("inference")
    config["providers"]["inference"] = [
        {"provider_id": "sentence-transformers", "provider_type": "inline::sentence-transformers", "config": {}}
    ]
    run_yaml = home / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config))
    env = {"HOME": str(home), "TRL_OUTPUT_DIR": str(home / "jobs"), "TRL_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    with StackServer(run_yaml, log_path=home / "server.log", env=env) as server:
        yield server


def test_a_registered_model_trains_from_its_model_path(
    stack_with_models: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    client = LlamaStackClient(base_url=stack_with_models.base_url, max_retries=0, timeout=60)
    registered = client.models.register(
        model_id="my-tiny-llama",
        provider_id="sentence-transformers",
        provider_model_id="my-tiny-llama",
        model_type="llm",
        metadata={"model_path": str(tiny_model)},
    )
    job_uuid = unique("registered")
    dataset_id = register_rows(client, preference_rows[:8])
    client.alpha.post_training.preference_optimize(
        **dpo_request(job_uuid, registered.identifier, dataset_id, max_steps_per_epoch=1)
    )
    status = wait_final(client, job_uuid)
    assert status.status == "completed", status.resources_allocated["error"]
    assert status.resources_allocated["model"] == str(tiny_model.resolve())
