"""The keyword arguments of preference_optimize and supervised_fine_tune calls, shared by the demo, the benchmark
and the tests."""

from pathlib import Path
from typing import Any


def dpo_request(
    job_uuid: str,
    model: str | Path,
    dataset_id: str,
    *,
    algorithm_config: dict[str, Any] | None = None,
    hyperparam_search_config: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """Keyword arguments for client.alpha.post_training.preference_optimize; ``training``: see training_config.

    ``hyperparam_search_config``: per-job overrides of the provider config (e.g. use_lora, lora_rank).
    """
    return {
        "job_uuid": job_uuid,
        "finetuned_model": str(model),
        "algorithm_config": algorithm_config or {"beta": 0.1, "loss_type": "sigmoid"},
        "training_config": training_config(dataset_id, **training),
        "hyperparam_search_config": hyperparam_search_config or {},
        "logger_config": {},
    }


def sft_request(
    job_uuid: str,
    model: str | Path,
    dataset_id: str,
    *,
    algorithm_config: dict[str, Any] | None = None,
    hyperparam_search_config: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """Keyword arguments for client.alpha.post_training.supervised_fine_tune; ``algorithm_config``: a LoRA config
    (``{"type": "LoRA", ...}``) or None for a full fine-tune; ``training``: see training_config."""
    request = {
        "job_uuid": job_uuid,
        "model": str(model),
        "training_config": training_config(dataset_id, **training),
        "hyperparam_search_config": hyperparam_search_config or {},
        "logger_config": {},
    }
    if algorithm_config is not None:
        request["algorithm_config"] = algorithm_config
    return request


def training_config(
    dataset_id: str,
    *,
    n_epochs: int = 1,
    max_steps_per_epoch: int | None = 3,
    batch_size: int = 4,
    lr: float = 5e-3,
    data_format: str = "instruct",
    validation_dataset_id: str | None = None,
    **training_overrides: Any,
) -> dict[str, Any]:
    """``data_format``: instruct for strings, dialog for lists of messages."""
    data_config: dict[str, Any] = {
        "dataset_id": dataset_id,
        "batch_size": batch_size,
        "shuffle": True,
        "data_format": data_format,
    }
    if validation_dataset_id is not None:
        data_config["validation_dataset_id"] = validation_dataset_id
    config: dict[str, Any] = {
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
        config["max_steps_per_epoch"] = max_steps_per_epoch
    return config
