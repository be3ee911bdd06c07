"""string_check and text_similarity: the answer compared with a reference, both rendered from templates."""

import re
from typing import Any, ClassVar

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.base import Fields, Grader
from llama_stack_provider_trl.graders.model_client import cosine_similarity
from llama_stack_provider_trl.graders.result import GraderResult
from llama_stack_provider_trl.graders.settings import GraderSettings
from llama_stack_provider_trl.graders.templates import Sample
from llama_stack_provider_trl.graders.text_metrics import METRICS

STRING_CHECK_OPERATIONS = ("eq", "ne", "like", "ilike")
TEXT_SIMILARITY_METRICS = ("cosine", *METRICS)


def like(value: str, pattern: str, ignore_case: bool) -> bool:
    """SQL LIKE: ``%`` any run of characters, ``_`` one character, ``\\`` escapes the next character."""
    regex: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            regex.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            regex.append(".*")
        elif char == "_":
            regex.append(".")
        else:
            regex.append(re.escape(char))
    if escaped:
        regex.append(re.escape("\\"))
    return re.fullmatch("".join(regex), value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


class StringCheckGrader(Grader):
    type: ClassVar[str] = "string_check"

    def __init__(self, spec: dict[str, Any], field: str) -> None:
        fields = Fields(spec, field, ("type", "name", "input", "reference", "operation"))
        super().__init__(spec, fields.name())
        self.input = fields.template("input")
        self.reference = fields.template("reference")
        self.operation = fields.choice("operation", STRING_CHECK_OPERATIONS)

    def _score(self, sample: Sample, item: Any, result: GraderResult) -> float:
        value, reference = self.input.render(sample, item), self.reference.render(sample, item)
        if self.operation == "eq":
            passed = value == reference
        elif self.operation == "ne":
            passed = value != reference
        else:
            passed = like(value, reference, ignore_case=self.operation == "ilike")
        return 1.0 if passed else 0.0


class TextSimilarityGrader(Grader):
    type: ClassVar[str] = "text_similarity"

    def __init__(self, spec: dict[str, Any], field: str, settings: GraderSettings) -> None:
        fields = Fields(spec, field, ("type", "name", "input", "reference", "evaluation_metric"))
        super().__init__(spec, fields.name())
        self.input = fields.template("input")
        self.reference = fields.template("reference")
        self.metric = fields.choice("evaluation_metric", TEXT_SIMILARITY_METRICS)
        self.settings = settings
        if self.metric == "cosine" and not (settings.embedding_model and settings.embeddings_url):
            raise RequestError(
                fields.path("evaluation_metric"),
                "cosine needs an embeddings model, and this server has none configured (the operator sets "
                "grader_embedding_model and grader_embedding_base_url or grader_model_base_url); use another "
                f"metric: {', '.join(METRICS)}",
            )

    def _score(self, sample: Sample, item: Any, result: GraderResult) -> float:
        value, reference = self.input.render(sample, item), self.reference.render(sample, item)
        if self.metric == "cosine":
            return cosine_similarity(self.settings, value, reference, result)
        return METRICS[self.metric](value, reference)

    def _grade_batch(self, samples: list[Sample], items: list[Any]) -> list[GraderResult]:
        if self.metric == "cosine":
            return self._threaded(samples, items, self.settings.model_concurrency)
        return super()._grade_batch(samples, items)
