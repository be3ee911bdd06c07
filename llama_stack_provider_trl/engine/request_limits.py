"""Upper bounds on one request, checked before any I/O: out-of-range values are 400, oversize input 413.

Lower bounds and formats are request_validation's job; this module only stops requests that would
run for years, exhaust memory or disk, or choke the file system with a path no file system accepts.
"""

import math
from http import HTTPStatus
from typing import Any

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.stack_api import PreferenceOptimizeRequest

MAX_N_EPOCHS = 10_000
MAX_STEPS_PER_EPOCH = 10_000_000
MAX_BATCH_SIZE = 65_536
MAX_GRADIENT_ACCUMULATION = 65_536
MAX_WARMUP_STEPS = 10_000_000
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_BETA = 1_000.0
MAX_MODEL_CHARS = 4_096
MAX_DATASET_ID_CHARS = 256
MAX_PATH_COMPONENT_CHARS = 255  # NAME_MAX on Linux and macOS


def _at_most(field: str, value: float | None, limit: float) -> None:
    if value is not None and math.isfinite(value) and value > limit:
        raise RequestError(field, f"{value} is above the limit of {limit:g}")


def _too_large(field: str, what: str) -> RequestError:
    return RequestError(field, what, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def check_request_limits(request: PreferenceOptimizeRequest) -> None:
    model = request.finetuned_model or ""
    if len(model) > MAX_MODEL_CHARS:
        raise _too_large("finetuned_model", f"{len(model)} characters; at most {MAX_MODEL_CHARS}")
    if any(len(part) > MAX_PATH_COMPONENT_CHARS for part in model.split("/")):
        raise RequestError("finetuned_model", f"a path component is over {MAX_PATH_COMPONENT_CHARS} characters")
    training = request.training_config
    data = training.data_config
    if data is not None and data.dataset_id and len(data.dataset_id) > MAX_DATASET_ID_CHARS:
        raise _too_large("training_config.data_config.dataset_id", f"over {MAX_DATASET_ID_CHARS} characters")
    _at_most("algorithm_config.beta", request.algorithm_config.beta, MAX_BETA)
    _at_most("training_config.n_epochs", training.n_epochs, MAX_N_EPOCHS)
    if "max_steps_per_epoch" in training.model_fields_set:
        _at_most("training_config.max_steps_per_epoch", training.max_steps_per_epoch, MAX_STEPS_PER_EPOCH)
    _at_most(
        "training_config.gradient_accumulation_steps", training.gradient_accumulation_steps, MAX_GRADIENT_ACCUMULATION
    )
    if data is not None:
        _at_most("training_config.data_config.batch_size", data.batch_size, MAX_BATCH_SIZE)
    optimizer = training.optimizer_config
    if optimizer is not None:
        _at_most("training_config.optimizer_config.lr", optimizer.lr, MAX_LR)
        _at_most("training_config.optimizer_config.weight_decay", optimizer.weight_decay, MAX_WEIGHT_DECAY)
        _at_most("training_config.optimizer_config.num_warmup_steps", optimizer.num_warmup_steps, MAX_WARMUP_STEPS)


def check_dataset_size(dataset_id: str, rows: list[dict[str, Any]], max_rows: int, max_field_chars: int) -> None:
    """``rows`` may hold one row more than ``max_rows``: that is how an oversize dataset is noticed."""
    field = "training_config.data_config.dataset_id"
    if len(rows) > max_rows:
        raise _too_large(field, f"dataset '{dataset_id}' has more than {max_rows} rows (the max_train_rows limit)")
    for index, row in enumerate(rows):
        for name, value in row.items():
            chars = _characters(value)
            if chars > max_field_chars:
                raise _too_large(
                    f"dataset '{dataset_id}' row {index}",
                    f"field '{name}' has {chars} characters; at most {max_field_chars} (max_field_chars)",
                )


def _characters(value: Any) -> int:
    """A string's length; a list of messages counts every message's content."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(m["content"]) for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))
    return 0
