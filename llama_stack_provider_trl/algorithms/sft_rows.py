"""Check supervised fine-tuning rows in the server, once, before any process starts, and put them in TRL's formats.

Accepted row formats (every row of a dataset in the same one; the first row decides), with the TRL SFT format
each is read as, and its ``data_format``:

- ``input_query`` + ``expected_answer`` (Llama Stack instruct): conversational prompt/completion, a user message
  then an assistant message; ``instruct``.
- ``chat_completion_input`` (a JSON list of messages) + ``expected_answer``: conversational prompt/completion,
  those messages then an assistant message; ``instruct``.
- ``text``: language modelling; ``instruct``.
- ``prompt`` + ``completion`` strings: standard prompt/completion; ``instruct``.
- ``messages`` or ``dialog`` (Llama Stack dialog): conversational language modelling (``messages``); ``dialog``.
- ``prompt`` + ``completion`` lists of messages: conversational prompt/completion; ``dialog``.

Conversational rows are rendered by the model's chat template; a conversation needs an assistant message after
its first, and a conversational completion starts with one: that is what the loss is on.
"""

import json
from dataclasses import dataclass
from typing import Any

from llama_stack_provider_trl.algorithms.row_fields import RowError, check_messages, missing


class SFTDataError(RowError):
    """A row is not usable for SFT; the message names the dataset, the row and the field."""


@dataclass(frozen=True)
class _Format:
    name: str
    fields: tuple[str, ...]
    data_format: str  # Llama Stack's data_format for it
    conversational: bool


_INSTRUCT = _Format("input_query/expected_answer", ("input_query", "expected_answer"), "instruct", True)
_CHAT_INPUT = _Format(
    "chat_completion_input/expected_answer", ("chat_completion_input", "expected_answer"), "instruct", True
)
_TEXT = _Format("text", ("text",), "instruct", False)
_PROMPT_COMPLETION = _Format("prompt/completion strings", ("prompt", "completion"), "instruct", False)
_MESSAGES = _Format("messages", ("messages",), "dialog", True)
_DIALOG = _Format("dialog", ("dialog",), "dialog", True)
_CHAT_PROMPT_COMPLETION = _Format("prompt/completion messages", ("prompt", "completion"), "dialog", True)
ACCEPTED = (
    "input_query + expected_answer, chat_completion_input + expected_answer, text, prompt + completion (strings "
    "or lists of messages), messages, or dialog"
)


@dataclass(frozen=True)
class SFTRows:
    rows: list[dict[str, Any]]  # in TRL's format: text, prompt/completion or messages
    format: str
    conversational: bool


def _format_of(dataset_id: str, first: dict[str, Any]) -> _Format:
    def has(field: str) -> bool:
        return not missing(first.get(field))

    if has("input_query"):
        return _INSTRUCT
    if has("chat_completion_input"):
        return _CHAT_INPUT
    if has("messages"):
        return _MESSAGES
    if has("dialog"):
        return _DIALOG
    if has("prompt") and has("completion"):
        return _CHAT_PROMPT_COMPLETION if isinstance(first["prompt"], list | tuple) else _PROMPT_COMPLETION
    if has("text"):
        return _TEXT
    raise SFTDataError(
        f"dataset '{dataset_id}' row 0 has fields {sorted(first)}, none of the SFT formats: give {ACCEPTED}"
    )


def _string(where: str, row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    if missing(value):
        raise SFTDataError(f"{where}: field '{field}' is missing")
    if not isinstance(value, str):
        raise SFTDataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SFTDataError(f"{where}: field '{field}' is empty")
    return value


def _messages(where: str, row: dict[str, Any], field: str) -> list[dict[str, str]]:
    value = row.get(field)
    if missing(value):
        raise SFTDataError(f"{where}: field '{field}' is missing")
    if not isinstance(value, list | tuple):
        raise SFTDataError(f"{where}: field '{field}' must be a list of messages, got {type(value).__name__}")
    return check_messages(where, field, list(value), SFTDataError)


def _json_messages(where: str, row: dict[str, Any], field: str) -> list[dict[str, str]]:
    value = row.get(field)
    if isinstance(value, str):  # Llama Stack stores it as a JSON-encoded list
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SFTDataError(f"{where}: field '{field}' is not a JSON list of messages ({exc})") from exc
    return _messages(where, {field: value}, field)


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def _row(where: str, row: dict[str, Any], form: _Format) -> dict[str, Any]:
    """One row in TRL's format, or SFTDataError naming the field."""
    if form is _INSTRUCT:
        return {
            "prompt": [{"role": "user", "content": _string(where, row, "input_query")}],
            "completion": _assistant(_string(where, row, "expected_answer")),
        }
    if form is _CHAT_INPUT:
        prompt = _json_messages(where, row, "chat_completion_input")
        return {"prompt": prompt, "completion": _assistant(_string(where, row, "expected_answer"))}
    if form is _TEXT:
        return {"text": _string(where, row, "text")}
    if form is _PROMPT_COMPLETION:
        return {field: _string(where, row, field) for field in ("prompt", "completion")}
    if form is _CHAT_PROMPT_COMPLETION:
        prompt, completion = _messages(where, row, "prompt"), _messages(where, row, "completion")
        if completion[0]["role"] != "assistant":
            raise SFTDataError(
                f"{where}: field 'completion' starts with a {completion[0]['role']} message; the completion is "
                "what the model learns to answer, so it starts with an assistant message"
            )
        return {"prompt": prompt, "completion": completion}
    field = form.fields[0]
    messages = _messages(where, row, field)
    if not any(m["role"] == "assistant" for m in messages[1:]):
        raise SFTDataError(
            f"{where}: field '{field}' has no assistant message after the first message; the loss is on the "
            "assistant's answers, so a conversation needs at least one"
        )
    return {"messages": messages}


def check_sft_rows(dataset_id: str, rows: list[dict[str, Any]], data_format: str | None) -> SFTRows:
    """Validate every row and return them in TRL's SFT format."""
    if not rows:
        raise SFTDataError(f"dataset '{dataset_id}' has no rows")
    form = _format_of(dataset_id, rows[0])
    if data_format is not None and data_format != form.data_format:
        raise SFTDataError(
            f"dataset '{dataset_id}' holds {form.name} rows but data_config.data_format is '{data_format}'; send "
            f"data_format '{form.data_format}'"
        )
    clean = []
    for index, row in enumerate(rows):
        where = f"dataset '{dataset_id}' row {index}"
        if form in (_PROMPT_COMPLETION, _CHAT_PROMPT_COMPLETION) and isinstance(row.get("prompt"), list | tuple) != (
            form is _CHAT_PROMPT_COMPLETION
        ):
            raise SFTDataError(
                f"{where}: field 'prompt' is {'a list of messages' if form is _PROMPT_COMPLETION else 'not a list'} "
                f"but row 0 holds {form.name}; every row must use the same format"
            )
        clean.append(_row(where, row, form))
    return SFTRows(rows=clean, format=form.name, conversational=form.conversational)
