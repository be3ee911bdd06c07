"""Check preference rows in the server, once, before any process starts; say which row and field is wrong.

TRL's DPOTrainer takes three shapes of preference data, and this provider passes them on unchanged:

- standard: ``prompt``, ``chosen`` and ``rejected`` strings;
- conversational: the same keys holding lists of ``{"role", "content"}`` messages, rendered by the
  tokenizer's chat template (TRL applies it; the prompt gets the generation prompt);
- implicit prompt: only ``chosen`` and ``rejected``, each holding the whole exchange; TRL takes their
  longest common prefix as the prompt.

Every row of a dataset must have the same shape: TRL decides how to read a dataset from its first row.
Llama Stack's ``data_format`` names the shape: ``instruct`` for strings, ``dialog`` for messages.
"""

from dataclasses import dataclass
from typing import Any, Literal

from llama_stack_provider_trl.algorithms.row_fields import RowError, check_messages, missing

RowShape = Literal["standard", "conversational"]
SHAPE_OF_DATA_FORMAT: dict[str, RowShape] = {"instruct": "standard", "dialog": "conversational"}
DATA_FORMAT_OF_SHAPE: dict[RowShape, str] = {shape: name for name, shape in SHAPE_OF_DATA_FORMAT.items()}


class PreferenceDataError(RowError):
    """A row is not usable; the message names the dataset, the row and the field."""


@dataclass(frozen=True)
class PreferenceRows:
    rows: list[dict[str, Any]]
    shape: RowShape
    implicit_prompt: bool

    @property
    def fields(self) -> tuple[str, ...]:
        return ("chosen", "rejected") if self.implicit_prompt else ("prompt", "chosen", "rejected")


def _shape_of(value: Any) -> RowShape | None:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list | tuple):
        return "conversational"
    return None


def _check_value(where: str, field: str, value: Any, shape: RowShape) -> str | list[dict[str, str]]:
    if missing(value):
        raise PreferenceDataError(f"{where}: field '{field}' is missing")
    found = _shape_of(value)
    if found is None:
        raise PreferenceDataError(
            f"{where}: field '{field}' must be a string or a list of messages, got {type(value).__name__}"
        )
    if found != shape:
        raise PreferenceDataError(
            f"{where}: field '{field}' is {'a string' if found == 'standard' else 'a list of messages'} but the "
            f"dataset's rows are {shape} ({'strings' if shape == 'standard' else 'lists of messages'}); every row "
            "and field must use the same format"
        )
    if shape == "standard":
        if not value.strip():
            raise PreferenceDataError(f"{where}: field '{field}' is empty")
        return value
    return check_messages(where, field, list(value), PreferenceDataError)


def _check_implicit_prompt(where: str, chosen: Any, rejected: Any, shape: RowShape) -> None:
    """TRL takes the longest common prefix of chosen and rejected (characters or messages) as the prompt; there
    must be one, and each side must go on past it."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0 or shared == min(len(chosen), len(rejected)):
        unit = "messages" if shape == "conversational" else "text"
        raise PreferenceDataError(
            f"{where}: without a 'prompt' field, chosen and rejected must start with the same {unit} (the prompt) "
            "and then both go on differently; give a 'prompt' field instead"
        )


def check_preference_rows(dataset_id: str, rows: list[dict[str, Any]], data_format: str | None) -> PreferenceRows:
    """Validate every row and return just the preference fields, as TRL will read them."""
    if not rows:
        raise PreferenceDataError(f"dataset '{dataset_id}' has no rows")
    first = rows[0]
    implicit_prompt = missing(first.get("prompt"))
    if missing(first.get("chosen")):
        raise PreferenceDataError(
            f"dataset '{dataset_id}' row 0: field 'chosen' is missing; every row needs chosen and rejected, and "
            f"usually prompt (found fields {sorted(first)})"
        )
    shape = _shape_of(first.get("chosen"))
    if shape is None:
        raise PreferenceDataError(
            f"dataset '{dataset_id}' row 0: field 'chosen' must be a string or a list of messages, got "
            f"{type(first.get('chosen')).__name__}; every row needs chosen and rejected (and usually prompt)"
        )
    expected = SHAPE_OF_DATA_FORMAT.get(data_format) if data_format else None
    if expected is not None and expected != shape:
        raise PreferenceDataError(
            f"dataset '{dataset_id}' holds {shape} rows ({'strings' if shape == 'standard' else 'lists of messages'}) "
            f"but data_config.data_format is '{data_format}'; send data_format '{DATA_FORMAT_OF_SHAPE[shape]}'"
        )

    fields = ("chosen", "rejected") if implicit_prompt else ("prompt", "chosen", "rejected")
    clean = []
    for index, row in enumerate(rows):
        where = f"dataset '{dataset_id}' row {index}"
        if implicit_prompt and not missing(row.get("prompt")):
            raise PreferenceDataError(
                f"{where}: has a 'prompt' field but row 0 does not; either every row has a prompt or none does"
            )
        checked = {field: _check_value(where, field, row.get(field), shape) for field in fields}
        if implicit_prompt:
            _check_implicit_prompt(where, checked["chosen"], checked["rejected"], shape)
        clean.append(checked)
    return PreferenceRows(rows=clean, shape=shape, implicit_prompt=implicit_prompt)
