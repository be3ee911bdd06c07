"""One engine behind both front doors: the same DPO job sent to Llama Stack 0.6.1's post_training API (through
llama-stack-client) and to OGX's fine-tuning API (through the openai client, `ogx run` from .venv-ogx) trains the
same tiny model on the same pairs with the same seed to the same per-step losses."""

import json
import time
from pathlib import Path

import openai
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.demo.stack_server import ogx_server

from conftest import REPO_ROOT
from helpers import dpo_request, register_rows, unique, wait_final

OGX_VENV = REPO_ROOT / ".venv-ogx"
SEED = 11


def _stack_losses(client: LlamaStackClient, model: Path, rows: list[dict[str, str]]) -> dict[int, float]:
    job_uuid = unique("both-doors")
    request = dpo_request(
        job_uuid,
        model,
        register_rows(client, rows),
        n_epochs=1,
        max_steps_per_epoch=None,
        batch_size=4,
        lr=5e-3,
        hyperparam_search_config={"seed": SEED},
    )
    client.alpha.post_training.preference_optimize(**request)
    status = wait_final(client, job_uuid)
    assert status.status == "completed", status.resources_allocated["error"]
    events = (Path(status.resources_allocated["job_dir"]) / EVENTS_FILE).read_text().splitlines()
    return {e["step"]: e["metrics"]["loss"] for e in map(json.loads, events) if e["event"] == "metrics"}


def _ogx_losses(home: Path, model: Path, rows: list[dict[str, str]]) -> dict[int, float]:
    with ogx_server(REPO_ROOT / "ogx-run.yaml", home, OGX_VENV) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-checked", max_retries=0)
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()  # TRL's format, as 0.6.1 gets the rows
        training_file = client.files.create(file=("pairs.jsonl", data), purpose="fine-tune")
        hyperparameters = {"batch_size": 4, "n_epochs": 1, "learning_rate_multiplier": 5000}  # x 1e-6: 5e-3
        job = client.fine_tuning.jobs.create(
            model=str(model),
            training_file=training_file.id,
            method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
            seed=SEED,
        )
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.3)
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        return {e.data["step"]: e.data["train_loss"] for e in events if e.type == "metrics"}  # type: ignore[index]


@pytest.mark.slow
def test_the_same_dpo_job_through_both_front_doors_has_the_same_per_step_losses(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    assert (OGX_VENV / "bin" / "ogx").is_file(), "the OGX venv is missing: run `make install-ogx`"
    rows = preference_rows[:12]  # batch 4: 3 steps, in the seed's shuffled order
    stack_losses = _stack_losses(client, tiny_model, rows)
    ogx_losses = _ogx_losses(tmp_path / "ogx", tiny_model, rows)
    assert sorted(stack_losses) == [1, 2, 3] and stack_losses[3] < stack_losses[1]
    assert ogx_losses == pytest.approx(stack_losses, rel=1e-6)
