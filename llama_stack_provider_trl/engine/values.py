"""One value of a request checked: a positive integer, a number within bounds, a flag. Each refusal names the
caller's field (``Given.field``)."""

import math

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given


def positive_int(given: Given[int], limit: int) -> int:
    value = given.value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RequestError(given.field, f"must be a positive integer, got {value}")
    _at_most(given, limit)
    return value


def number(given: Given[float], limit: float, zero_ok: bool = False) -> float:
    """A finite number above 0 (or at least 0, with ``zero_ok``), at most ``limit``."""
    value = given.value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError(given.field, f"must be a number, got {value!r}")
    if zero_ok and (not math.isfinite(value) or value < 0):
        raise RequestError(given.field, f"must be a finite number >= 0, got {value}")
    if not zero_ok and (not math.isfinite(value) or value <= 0):
        raise RequestError(given.field, f"must be a finite number > 0, got {value}")
    _at_most(given, limit)
    return float(value)


def number_or(given: Given[float] | None, limit: float, default: float) -> float:
    """A number at least 0 when given, else the provider config's ``default``."""
    return default if given is None else number(given, limit, zero_ok=True)


def _at_most(given: Given[float], limit: float) -> None:
    if given.value > limit:
        raise RequestError(given.field, f"{given.value} is above the limit of {limit:g}")


def flag(given: Given[bool] | None, default: bool) -> bool:
    if given is None:
        return default
    if not isinstance(given.value, bool):
        raise RequestError(given.field, f"must be true or false, got {given.value!r}")
    return given.value


def refuse_if_set(given: Given[bool] | None, why: str) -> None:
    if flag(given, default=False):
        assert given is not None
        raise RequestError(given.field, why)
