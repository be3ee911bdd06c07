"""Checks every dataset row format shares: a field that is missing, and a list of chat messages."""

import math
from typing import Any

ROLES = frozenset({"system", "user", "assistant", "tool"})


class RowError(ValueError):
    """A row is not usable; the message names the dataset, the row and the field."""


def is_role(value: Any) -> bool:
    """A chat role: one of ROLES (a list or an object, which no set holds, is none)."""
    return isinstance(value, str) and value in ROLES


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))  # pandas fills gaps with NaN


def check_messages(
    where: str, field: str, messages: list[Any], error: type[RowError] = RowError
) -> list[dict[str, str]]:
    """The messages as ``{"role", "content"}`` dicts, or ``error`` naming the first bad one."""
    if not messages:
        raise error(f"{where}: field '{field}' is an empty list of messages")
    clean = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise error(
                f"{where}: field '{field}' message {position} must be an object with role and content, "
                f"got {type(message).__name__}"
            )
        role, content = message.get("role"), message.get("content")
        if not is_role(role):
            raise error(f"{where}: field '{field}' message {position} has role {role!r}; use one of {sorted(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise error(f"{where}: field '{field}' message {position} needs non-empty string content")
        clean.append({"role": role, "content": content})
    return clean
