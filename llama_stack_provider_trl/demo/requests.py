"""The keyword arguments of a preference_optimize call, shared by the demo, the benchmark and the tests."""

from pathlib import Path
from typing import Any


def dpo_request(
    job_uuid: str,
    model: str | Path,
    dataset_id: str,
    *,
    n_epochs: int = 1,
    max_steps_per_epoch: int | None = 3,
    batch_size: int = 4,
    lr: float = 5e-3,
    data_format: str = "instruct",
    validation_dataset_id: str | None = None,
    algorithm_config: dict[str, Any] | None = None,
    hyperparam_search_config: dict[str, Any] | None = None,
    **training_overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for client.alpha.post_training.preference_optimize.

    ``data_format``: instruct for prompt/chosen/rejected strings, dialog for lists of messages.
    ``hyperparam_search_config``: per-job overrides of the provider config (e.g. use_lora, lora_rank).
    """
    data_config: dict[str, Any] = {
        "dataset_id": dataset_id,
        "batch_size": batch_size,
        "shuffle": True,
        "data_format": data_format,
    }
    if validation_dataset_id is not None:
        data_config["validation_dataset_id"] = validation_dataset_id
    training_config: dict[str, Any] = {
        "n_epochs": n_epochs,
        "data_config": data_config,
        "optimizer_config": {
            "optimizer_type": "adamw",
            "lr": lr,
            "weight_decay": 0.0,
            "num_warmup_steps": 0,
        },
        **training_overrides,
    }
    if max_steps_per_epoch is not None:
        training_config["max_steps_per_epoch"] = max_steps_per_epoch
    return {
        "job_uuid": job_uuid,
        "finetuned_model": str(model),
        "algorithm_config": algorithm_config or {"beta": 0.1, "loss_type": "sigmoid"},
        "training_config": training_config,
        "hyperparam_search_config": hyperparam_search_config or {},
        "logger_config": {},
    }
