"""Job specs and waits for tests of the job system that run without a Llama Stack server."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.demo.fake_recipe import LAUNCHES_FILE
from llama_stack_provider_trl.job_spec import TRAIN_DATA_FILE, DPOJobSpec

FAKE_RECIPE = "llama_stack_provider_trl.demo.fake_recipe"


def make_spec(root: Path, job_uuid: str, model: str = "fake", **overrides: Any) -> DPOJobSpec:
    job_dir = root / job_uuid
    job_dir.mkdir(parents=True)
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8
    (job_dir / TRAIN_DATA_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields: dict[str, Any] = {
        "job_uuid": job_uuid,
        "model": model,
        "job_dir": str(job_dir),
        "device": "cpu",
        "precision": "auto",
        "beta": 0.1,
        "loss_type": "sigmoid",
        "reference_strategy": "frozen_copy",
        "n_epochs": 1,
        "max_steps_per_epoch": 3,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "shuffle": False,
        "learning_rate": 5e-3,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "optimizer": "adamw",
        "max_seq_length": 128,
        "gradient_checkpointing": False,
        "activation_offloading": False,
        "logging_steps": 1,
        "seed": 0,
        "trust_remote_code": False,
        "num_rows": len(rows),
    }
    spec = DPOJobSpec(**{**fields, **overrides})
    spec.write()
    return spec


def launches(job_dir: str | Path) -> list[list[str]]:
    """One entry per time the fake recipe ran for this job: [pid, time, *flags]."""
    path = Path(job_dir) / LAUNCHES_FILE
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def poll(condition: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout_s}s")
        time.sleep(0.1)
    return result
