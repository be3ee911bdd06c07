"""Uploaded JSONL training files, in OpenAI's formats or TRL's, turned into the engine's rows.

OpenAI's preference format, one JSON object a line::

    {"input": {"messages": [{"role": "user", "content": "..."}]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

becomes TRL's conversational row ``{"prompt": messages, "chosen": preferred, "rejected": non_preferred}``. A line
already in one of TRL's preference formats (``prompt``/``chosen``/``rejected``, strings or messages) passes as
it is; the engine checks those rows (algorithms/dpo_rows.py). OpenAI's supervised format (``{"messages"}``)
is ``method.type: supervised``'s (``supervised_rows``), which also passes TRL's SFT formats on. OpenAI's
reinforcement format (``reinforcement_rows``) is one prompt a line, ``{"messages": [... ending with the user's turn],
<any other fields>}``: the other fields are the item the grader reads (``{{item.<field>}}``), and the row becomes
``{"prompt": messages, "item": {other fields}}`` (algorithms/grpo_rows.py).

Every problem is a RequestError on the caller's field (``training_file`` or ``validation_file``) naming the file,
the 1-based line and the JSON field, as OpenAI answers a bad file. A file is read line by line and only up to the
rows a job may have; the front door calls these off the event loop.
"""

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from llama_stack_provider_trl.algorithms.row_fields import ROLES, is_role
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given

OPENAI_PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
TRL_PREFERENCE_KEYS = frozenset({"prompt", "chosen", "rejected"})
# One line's JSON object, with the file and its line number for errors, as the engine's row
RowReader = Callable[[Given[str], int, dict[str, Any]], dict[str, Any]]


def preference_rows(file: Given[str], content: bytes, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` rows of a preference file (one more than a caller accepts tells it the file is too long)."""
    return _rows(file, content, limit, _preference_row)


def supervised_rows(file: Given[str], content: bytes, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` rows of a supervised file: OpenAI's ``{"messages": [...]}`` (each assistant message may
    carry ``weight`` 1; 0 is refused, as TRL trains on every assistant turn), or one of TRL's SFT formats as is."""
    return _rows(file, content, limit, _supervised_row)


def reinforcement_rows(file: Given[str], content: bytes, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` prompts of a reinforcement file: ``{"messages": [...]}`` ending with the user's turn, the
    line's other fields as the grader's item."""
    return _rows(file, content, limit, _prompt_row)


def _rows(file: Given[str], content: bytes, limit: int, row_of: RowReader) -> list[dict[str, Any]]:
    rows = []
    for number, line in _lines(file, content):
        if len(rows) == limit:
            break
        rows.append(row_of(file, number, _object(file, number, line)))
    if not rows:
        raise RequestError(file.field, f"file '{file.value}' has no lines; upload a JSONL file, one example a line")
    return rows


def _preference_row(file: Given[str], number: int, row: dict[str, Any]) -> dict[str, Any]:
    if OPENAI_PREFERENCE_KEYS & row.keys():
        return _openai_preference(file, number, row)
    if TRL_PREFERENCE_KEYS & row.keys():
        return row
    if "messages" in row:
        raise _bad(
            file,
            number,
            'a supervised example ({"messages": [...]}); method dpo needs preference pairs: '
            '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}',
        )
    raise _bad(
        file,
        number,
        f"fields {sorted(row)}; a preference pair needs input, preferred_output and non_preferred_output "
        "(OpenAI's format) or prompt, chosen and rejected (TRL's)",
    )


def _supervised_row(file: Given[str], number: int, row: dict[str, Any]) -> dict[str, Any]:
    if "messages" in row:
        return {"messages": _conversation(file, number, row)}
    if OPENAI_PREFERENCE_KEYS & row.keys() or {"chosen", "rejected"} <= row.keys():
        raise _bad(file, number, 'a preference pair; method supervised needs {"messages": [...]} examples')
    return row  # TRL's formats (text, prompt/completion, ...): the engine checks them


def _prompt_row(file: Given[str], number: int, row: dict[str, Any]) -> dict[str, Any]:
    if "messages" not in row:
        hint = " (a preference pair: that is method dpo's format)" if OPENAI_PREFERENCE_KEYS & row.keys() else ""
        raise _bad(
            file,
            number,
            f"field 'messages' is missing{hint}; a reinforcement prompt is "
            '{"messages": [..., {"role": "user", "content": ...}], <fields the grader reads>}',
        )
    if row.get("tools") or row.get("functions"):
        raise _bad(file, number, "tool definitions are not supported; send conversations of text messages")
    prompt = _messages(file, number, "messages", row["messages"])
    if prompt[-1]["role"] != "user":
        raise _bad(
            file,
            number,
            f"field 'messages[{len(prompt) - 1}].role' is '{prompt[-1]['role']}'; the last message is the user's, "
            "which the model answers",
        )
    return {"prompt": prompt, "item": {key: value for key, value in row.items() if key != "messages"}}


def _conversation(file: Given[str], number: int, row: dict[str, Any]) -> list[dict[str, str]]:
    if row.get("tools") or row.get("functions"):
        raise _bad(file, number, "tool definitions are not supported; send conversations of text messages")
    messages = row["messages"]
    clean = _messages(file, number, "messages", messages)
    for position, message in enumerate(messages):
        weight = message.get("weight", 1)
        if weight != 1:
            raise _bad(
                file,
                number,
                f"field 'messages[{position}].weight' is {weight!r}; every assistant message is trained on here "
                "(weight 1): drop the weight, or the message",
            )
    if not any(message["role"] == "assistant" for message in clean[1:]):
        raise _bad(file, number, "field 'messages' has no assistant message after the first to learn from")
    return clean


def _lines(file: Given[str], content: bytes) -> Iterator[tuple[int, str]]:
    """The non-blank lines, decoded one at a time: no second copy of the whole file is made."""
    for number, raw in enumerate(io.BytesIO(content), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(file, number, f"not UTF-8 text (byte {exc.start} of the line); upload JSONL") from exc
        if line.strip():
            yield number, line


def _object(file: Given[str], number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad(file, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:  # arrays or objects nested thousands deep
        raise _bad(file, number, "JSON nested too deep; an example is an object of messages and strings") from exc
    if not isinstance(row, dict):
        raise _bad(file, number, f"not a JSON object but {type(row).__name__}")
    return row


def _openai_preference(file: Given[str], number: int, row: dict[str, Any]) -> dict[str, Any]:
    missing = sorted(OPENAI_PREFERENCE_KEYS - row.keys())
    if missing:
        raise _bad(file, number, f"field '{missing[0]}' is missing")
    conversation = row["input"]
    if not isinstance(conversation, dict) or "messages" not in conversation:
        raise _bad(file, number, "field 'input' must be an object with 'messages' (the conversation so far)")
    prompt = _messages(file, number, "input.messages", conversation["messages"])
    if prompt[-1]["role"] == "assistant":
        raise _bad(file, number, "field 'input.messages' ends with an assistant message; the last turn is the user's")
    return {
        "prompt": prompt,
        "chosen": _answer(file, number, "preferred_output", row["preferred_output"]),
        "rejected": _answer(file, number, "non_preferred_output", row["non_preferred_output"]),
    }


def _answer(file: Given[str], number: int, field: str, value: Any) -> list[dict[str, str]]:
    messages = _messages(file, number, field, value)
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            raise _bad(file, number, f"field '{field}[{position}].role' is '{message['role']}'; answers are assistant")
    return messages


def _messages(file: Given[str], number: int, field: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _bad(file, number, f"field '{field}' must be a non-empty list of messages")
    messages = []
    for position, message in enumerate(value):
        where = f"{field}[{position}]"
        if not isinstance(message, dict):
            raise _bad(file, number, f"field '{where}' must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not is_role(role):
            raise _bad(file, number, f"field '{where}.role' is {role!r}; use one of {sorted(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise _bad(file, number, f"field '{where}.content' must be a non-empty string")
        messages.append({"role": role, "content": content})
    return messages


def _bad(file: Given[str], number: int, problem: str) -> RequestError:
    return RequestError(file.field, f"file '{file.value}' line {number}: {problem}")
