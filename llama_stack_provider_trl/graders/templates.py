"""OpenAI's grader templates: ``{{item.<path>}}`` (the data line's fields) and ``{{sample.output_text}}``,
``{{sample.output_json.<path>}}`` (the model's answer, and that answer parsed as JSON when it is JSON).

A path is dot-separated keys (``item.a.b``); a list position is a number (``item.answers.0`` or
``item.answers[0]``). A value that is not a string renders as JSON. Templates are parsed when the grader is
compiled (an unknown namespace is a refusal then), and rendered per sample (a missing value is
``invalid_variable_error``; ``output_json`` of an answer that is not JSON is ``sample_parse_error``).
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from llama_stack_provider_trl.engine.errors import RequestError

_VARIABLE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_EXPRESSION = re.compile(r"^[A-Za-z_]\w*(\.[^.\[\]{}]+|\[\d+\])*$")
_PATH_PART = re.compile(r"[^.\[\]]+")
SAMPLE_VARIABLES = ("output_text", "output_json")


class TemplateError(Exception):
    """A template that cannot be rendered for this sample; ``flag`` is OpenAI's error flag for it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class Sample:
    """The model's answer: its text, and its JSON when the text parses as JSON (``output_json`` is None then)."""

    output_text: str
    output_json: Any = None
    is_json: bool = False

    @classmethod
    def from_text(cls, text: str) -> "Sample":
        try:
            return cls(text, json.loads(text), True)
        except (ValueError, RecursionError):
            return cls(text)

    def as_dict(self) -> dict[str, Any]:
        """The ``sample`` a python grader's ``grade(sample, item)`` receives."""
        return {"output_text": self.output_text, "output_json": self.output_json, "output_tools": []}


@dataclass(frozen=True)
class Template:
    """A string with ``{{...}}`` variables, parsed once."""

    text: str
    parts: tuple[str | tuple[str, ...], ...]

    @property
    def uses_output_json(self) -> bool:
        return any(isinstance(part, tuple) and part[:2] == ("sample", "output_json") for part in self.parts)

    def render(self, sample: Sample, item: Any) -> str:
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value = _lookup(part, sample, item)
            pieces.append(value if isinstance(value, str) else json.dumps(value))
        return "".join(pieces)


def parse_template(text: str, field: str) -> Template:
    """``text`` parsed; RequestError naming ``field`` for a variable outside the ``item`` and ``sample`` namespaces."""
    if not isinstance(text, str):
        raise RequestError(field, f"must be a string, got {type(text).__name__}")
    parts: list[str | tuple[str, ...]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(_parse_path(match.group(1), field))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return Template(text, tuple(parts))


def _parse_path(expression: str, field: str) -> tuple[str, ...]:
    if not _EXPRESSION.match(expression):
        raise RequestError(
            field, f"'{{{{{expression}}}}}' is not a variable; write {{{{item.<field>}}}} or {{{{sample.output_text}}}}"
        )
    path = tuple(_PATH_PART.findall(expression))
    if path[0] == "item":
        return path
    if path[0] == "sample":
        if len(path) < 2 or path[1] not in SAMPLE_VARIABLES:
            raise RequestError(field, f"'{{{{{expression}}}}}': the sample namespace has {', '.join(SAMPLE_VARIABLES)}")
        if path[1] == "output_text" and len(path) > 2:
            raise RequestError(field, f"'{{{{{expression}}}}}': sample.output_text is a string, it has no fields")
        return path
    raise RequestError(
        field, f"'{{{{{expression}}}}}': a template variable starts with item. or sample. (OpenAI's namespaces)"
    )


def _lookup(path: tuple[str, ...], sample: Sample, item: Any) -> Any:
    if path[0] == "sample":
        if path[1] == "output_text":
            return sample.output_text
        if not sample.is_json:
            raise TemplateError("sample_parse_error", "the sample is not JSON, so sample.output_json is unset")
        value, rest = sample.output_json, path[2:]
    else:
        value, rest = item, path[1:]
    for depth, key in enumerate(rest):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            name = ".".join(path[: len(path) - len(rest) + depth + 1])
            raise TemplateError("invalid_variable_error", f"{{{{{name}}}}} is not in the {path[0]}")
    return value
