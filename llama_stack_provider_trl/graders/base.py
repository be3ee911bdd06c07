"""What every grader shares: the Grader base class (grade one sample or a batch), and the checks of a grader's
fields, each refusal naming the caller's field path (``grader.graders.acc.operation``)."""

import time
from abc import ABC
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.result import GraderErrors, GraderResult
from llama_stack_provider_trl.graders.templates import Sample, Template, TemplateError, parse_template


class Grader(ABC):
    """A checked grader. ``spec`` is the caller's grader dict; ``grade`` never raises for a bad sample: failures
    are the result's error flags, with reward 0."""

    type: ClassVar[str]

    def __init__(self, spec: dict[str, Any], name: str) -> None:
        self.spec = spec
        self.name = name

    def grade(self, sample: str | Sample, item: Any = None) -> GraderResult:
        return self.grade_batch([sample], [item])[0]

    def grade_batch(self, samples: Sequence[str | Sample], items: Sequence[Any]) -> list[GraderResult]:
        """Every sample graded (concurrently where the grader waits on a model or a process), in order."""
        parsed = [sample if isinstance(sample, Sample) else Sample.from_text(sample) for sample in samples]
        return self._grade_batch(parsed, list(items))

    def _grade_batch(self, samples: list[Sample], items: list[Any]) -> list[GraderResult]:
        return [self._timed(sample, item) for sample, item in zip(samples, items, strict=True)]

    def _timed(self, sample: Sample, item: Any) -> GraderResult:
        start = time.monotonic()
        result = self.result(0.0)
        try:
            result.reward = self._score(sample, item, result)
        except TemplateError as exc:
            result.errors.flag(exc.flag)
        except Exception as exc:  # a grader's own failure is the sample's other_error, never the caller's
            result.errors.flag("other_error")
            result.errors.details.setdefault("other_error_details", f"{type(exc).__name__}: {exc}")
        if result.errors.failed:
            result.reward = 0.0
        result.execution_time = time.monotonic() - start
        return result

    def _score(self, sample: Sample, item: Any, result: GraderResult) -> float:
        raise NotImplementedError

    def result(self, reward: float) -> GraderResult:
        return GraderResult(reward=reward, name=self.name, type=self.type, errors=GraderErrors())

    def _threaded(self, samples: list[Sample], items: list[Any], workers: int) -> list[GraderResult]:
        if len(samples) <= 1 or workers <= 1:
            return Grader._grade_batch(self, samples, items)
        with ThreadPoolExecutor(max_workers=min(workers, len(samples)), thread_name_prefix="grader") as pool:
            return list(pool.map(self._timed, samples, items))


class Fields:
    """A grader dict's fields, checked one by one; each refusal names ``field.<key>``."""

    def __init__(self, spec: Any, field: str, known: Sequence[str]) -> None:
        if not isinstance(spec, dict):
            raise RequestError(field, f"must be a grader object, got {type(spec).__name__}")
        unknown = [key for key in spec if key not in known]
        if unknown:
            raise RequestError(
                f"{field}.{unknown[0]}",
                f"is not a field of a {spec.get('type')} grader; its fields: {', '.join(known)}",
            )
        self.spec = spec
        self.field = field

    def path(self, key: str) -> str:
        return f"{self.field}.{key}"

    def required(self, key: str) -> Any:
        if self.spec.get(key) is None:
            raise RequestError(self.path(key), "is required")
        return self.spec[key]

    def string(self, key: str, required: bool = True) -> str | None:
        value = self.required(key) if required else self.spec.get(key)
        if value is not None and not isinstance(value, str):
            raise RequestError(self.path(key), f"must be a string, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.required(key)
        if value not in choices:
            raise RequestError(self.path(key), f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def template(self, key: str) -> Template:
        return parse_template(self.required(key), self.path(key))

    def name(self) -> str:
        name = self.string("name")
        assert name is not None
        if not name.strip():
            raise RequestError(self.path("name"), "must not be empty")
        return name
