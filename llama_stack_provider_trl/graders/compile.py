"""A grader dict (OpenAI's JSON) checked and built into a Grader; every refusal a RequestError naming the field."""

from typing import Any

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.base import Grader
from llama_stack_provider_trl.graders.model_graders import LabelModelGrader, ScoreModelGrader
from llama_stack_provider_trl.graders.multi_grader import MultiGrader
from llama_stack_provider_trl.graders.python_grader import PythonGrader
from llama_stack_provider_trl.graders.settings import GraderSettings
from llama_stack_provider_trl.graders.string_graders import StringCheckGrader, TextSimilarityGrader

# What a job's grader or a graders/run request may be (label_model only inside multi, as OpenAI's RFT allows).
TOP_LEVEL_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
SUB_GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model")


def compile_grader(spec: Any, settings: GraderSettings | None = None, field: str = "grader") -> Grader:
    """``spec`` checked and built. ``field`` is where the caller's request holds it (``method.reinforcement.grader``);
    ``settings`` the operator's (no model server when None)."""
    return _compile(spec, settings or GraderSettings(), field, TOP_LEVEL_TYPES)


def _compile(spec: Any, settings: GraderSettings, field: str, allowed: tuple[str, ...]) -> Grader:
    if not isinstance(spec, dict):
        raise RequestError(field, f"must be a grader object with a type, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in allowed:
        where = "inside a multi grader" if allowed is SUB_GRADER_TYPES else "here"
        extra = " (label_model only inside a multi grader)" if kind == "label_model" else ""
        raise RequestError(f"{field}.type", f"must be one of {', '.join(allowed)} {where}, got {kind!r}{extra}")
    if kind == "string_check":
        return StringCheckGrader(spec, field)
    if kind == "text_similarity":
        return TextSimilarityGrader(spec, field, settings)
    if kind == "python":
        return PythonGrader(spec, field, settings)
    if kind == "score_model":
        return ScoreModelGrader(spec, field, settings)
    if kind == "label_model":
        return LabelModelGrader(spec, field, settings)
    subs = MultiGrader.sub_specs(spec, field)
    single = "type" in spec["graders"]
    graders = {
        name: _compile(sub, settings, f"{field}.graders" if single else f"{field}.graders.{name}", SUB_GRADER_TYPES)
        for name, sub in subs.items()
    }
    return MultiGrader(spec, field, graders)
