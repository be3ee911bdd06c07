"""A request's datasets read through the front door: the dataset id and format checked, at most max_train_rows
rows of at most max_field_chars characters a field (413 beyond), then checked row by row by the algorithm's
checker, whose RowError becomes a RequestError naming the dataset's field."""

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from llama_stack_provider_trl.algorithms.dpo_rows import SHAPE_OF_DATA_FORMAT
from llama_stack_provider_trl.algorithms.row_fields import RowError
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, RequestSources

MAX_DATASET_ID_CHARS = 256


def check_dataset_id(dataset_id: Given[str]) -> None:
    if not isinstance(dataset_id.value, str) or not dataset_id.value:
        raise RequestError(
            dataset_id.field,
            "is required: give dataset_id (a dataset registered with purpose post-training/messages) and batch_size",
        )
    if len(dataset_id.value) > MAX_DATASET_ID_CHARS:
        raise RequestError(
            dataset_id.field, f"over {MAX_DATASET_ID_CHARS} characters", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )


def check_data_format(data_format: Given[str] | None) -> None:
    if data_format is not None and data_format.value not in SHAPE_OF_DATA_FORMAT:
        raise RequestError(
            data_format.field,
            f"unknown data format {data_format.value!r}; use instruct (strings) or dialog (lists of messages)",
        )


async def checked_rows[R](
    dataset_id: Given[str],
    data_format: Given[str] | None,
    config: TrlPostTrainingConfig,
    sources: RequestSources,
    check: Callable[[str, list[dict[str, Any]], str | None], R],
) -> R:
    """The dataset's rows as ``check`` (the algorithm's row checks) returns them; its RowError names the field."""
    # One row over the limit is enough to refuse an oversize dataset without reading all of it.
    rows = await sources.dataset_rows(dataset_id, limit=config.max_train_rows + 1)
    _check_dataset_size(dataset_id, rows, config.max_train_rows, config.max_field_chars)
    try:
        return check(dataset_id.value, rows, data_format.value if data_format else None)
    except RowError as exc:
        raise RequestError(dataset_id.field, str(exc)) from exc


def _check_dataset_size(dataset_id: Given[str], rows: list[dict[str, Any]], max_rows: int, max_chars: int) -> None:
    """``rows`` may hold one row more than ``max_rows``: that is how an oversize dataset is noticed."""
    if len(rows) > max_rows:
        raise RequestError(
            dataset_id.field,
            f"dataset '{dataset_id.value}' has more than {max_rows} rows (the max_train_rows limit)",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    for index, row in enumerate(rows):
        for name, value in row.items():
            chars = _characters(value)
            if chars > max_chars:
                raise RequestError(
                    dataset_id.field,
                    f"dataset '{dataset_id.value}' row {index}: field '{name}' has {chars} characters; at most "
                    f"{max_chars} (max_field_chars)",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )


def _characters(value: Any) -> int:
    """A string's length; a list of messages counts every message's content."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(m["content"]) for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))
    return 0


async def training_and_validation_rows[R](
    request: JobRequest,
    config: TrlPostTrainingConfig,
    sources: RequestSources,
    check: Callable[[str, list[dict[str, Any]], str | None], R],
) -> tuple[R, R | None]:
    """The training dataset's rows and the validation dataset's (None without one), each as ``check`` returns it."""
    train = await checked_rows(request.dataset_id, request.data_format, config, sources, check)
    validation = request.validation_dataset_id
    if validation is None:
        return train, None
    return train, await checked_rows(validation, request.data_format, config, sources, check)
