import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_stack_client import LlamaStackClient

FINAL = {"completed", "failed", "cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_rows(client: LlamaStackClient, rows: list[dict[str, Any]]) -> str:
    dataset_id = unique("prefs")
    client.beta.datasets.register(
        purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
    )
    return dataset_id


def dpo_request(
    job_uuid: str,
    model: str | Path,
    dataset_id: str,
    *,
    n_epochs: int = 1,
    max_steps_per_epoch: int | None = 3,
    batch_size: int = 4,
    lr: float = 5e-3,
    algorithm_config: dict[str, Any] | None = None,
    **training_overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for client.alpha.post_training.preference_optimize."""
    training_config: dict[str, Any] = {
        "n_epochs": n_epochs,
        "data_config": {"dataset_id": dataset_id, "batch_size": batch_size, "shuffle": True, "data_format": "instruct"},
        "optimizer_config": {"optimizer_type": "adamw", "lr": lr, "weight_decay": 0.0, "num_warmup_steps": 0},
        **training_overrides,
    }
    if max_steps_per_epoch is not None:
        training_config["max_steps_per_epoch"] = max_steps_per_epoch
    return {
        "job_uuid": job_uuid,
        "finetuned_model": str(model),
        "algorithm_config": algorithm_config or {"beta": 0.1, "loss_type": "sigmoid"},
        "training_config": training_config,
        "hyperparam_search_config": {},
        "logger_config": {},
    }


def wait_for(
    client: LlamaStackClient, job_uuid: str, done: Callable[[Any], bool], timeout_s: float = 300, poll_s: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.alpha.post_training.job.status(job_uuid=job_uuid)
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_uuid} still {status.status}: {status.resources_allocated}")
        time.sleep(poll_s)


def wait_final(client: LlamaStackClient, job_uuid: str, timeout_s: float = 300) -> Any:
    return wait_for(client, job_uuid, lambda s: s.status in FINAL, timeout_s)


def process_gone(pid: int) -> bool:
    """True once no process with this pid exists (or only a zombie nobody will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True
