"""multi: named sub-graders, each grading the sample, combined by ``calculate_output``. ``graders`` maps names
to graders (OpenAI's docs); the SDK's annotation, one grader, is read as ``{its name: it}``."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.base import Fields, Grader
from llama_stack_provider_trl.graders.formula import FormulaError, parse_formula
from llama_stack_provider_trl.graders.result import GraderResult
from llama_stack_provider_trl.graders.templates import Sample


class MultiGrader(Grader):
    type: ClassVar[str] = "multi"

    def __init__(self, spec: dict[str, Any], field: str, graders: dict[str, Grader]) -> None:
        fields = Fields(spec, field, ("type", "name", "graders", "calculate_output"))
        super().__init__(spec, fields.name())
        self.graders = graders
        self.formula = parse_formula(spec.get("calculate_output"), set(graders), fields.path("calculate_output"))

    @staticmethod
    def sub_specs(spec: dict[str, Any], field: str) -> dict[str, Any]:
        """The sub-grader dicts by name, from either shape of ``graders``."""
        graders = spec.get("graders")
        if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
            name = graders.get("name")
            if not isinstance(name, str) or not name:
                raise RequestError(f"{field}.graders.name", "is required (the formula refers to the grader by it)")
            return {name: graders}
        if not isinstance(graders, dict) or not graders:
            raise RequestError(f"{field}.graders", 'must map names to graders, e.g. {"accuracy": {...}}')
        return graders

    def _grade_batch(self, samples: list[Sample], items: list[Any]) -> list[GraderResult]:
        with ThreadPoolExecutor(max_workers=len(self.graders), thread_name_prefix="multi") as pool:
            futures = {name: pool.submit(grader._grade_batch, samples, items) for name, grader in self.graders.items()}
            by_grader = {name: future.result() for name, future in futures.items()}
        return [self._combine({name: results[i] for name, results in by_grader.items()}) for i in range(len(samples))]

    def _combine(self, parts: dict[str, GraderResult]) -> GraderResult:
        result = self.result(0.0)
        for name, part in parts.items():
            result.sub_rewards[name] = part.reward
            result.errors.merge(part.errors)
            result.execution_time = max(result.execution_time, part.execution_time)
            result.sampled_model_name = result.sampled_model_name or part.sampled_model_name
            for model, usage in part.token_usage_per_model.items():
                result.token_usage_per_model.setdefault(model, type(usage)()).add(usage)
        try:
            reward = self.formula(result.sub_rewards)
        except FormulaError:
            result.errors.flag("formula_parse_error")
            return result
        result.reward = 0.0 if result.errors.failed else reward
        return result
