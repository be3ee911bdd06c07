"""A grader as TRL's GRPOTrainer reward function: ``(prompts, completions, **columns) -> list[float]``, a whole
batch graded at once, with the batch's per-sub-grader means and error counts for the step's metrics."""

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from llama_stack_provider_trl.graders.base import Grader
from llama_stack_provider_trl.graders.compile import compile_grader
from llama_stack_provider_trl.graders.result import GraderResult
from llama_stack_provider_trl.graders.settings import GraderSettings

ITEM_COLUMN = "item"
# Keyword arguments GRPOTrainer passes besides the dataset's columns.
TRAINER_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments", "completion_ids")


def completion_text(completion: Any) -> str:
    """A TRL completion (a string, or a list of chat messages) as the answer's text."""
    if isinstance(completion, str):
        return completion
    pieces = []
    for message in completion or []:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        pieces.append(content if isinstance(content, str) else "")
    return "".join(pieces)


def item_value(value: Any) -> Any:
    """An ``item`` column's value: the JSON of the data line's other fields (or that dict itself)."""
    return json.loads(value) if isinstance(value, str) else value


class RewardFunction:
    """Call it as GRPOTrainer does. ``last_metrics()``: the last batch's ``grader/<sub>/mean`` (multi graders),
    ``grader/errors/<flag>`` counts and ``grader/seconds``; also logged through TRL's ``log_metric`` when given."""

    def __init__(self, grader: Grader, name: str | None = None) -> None:
        self.grader = grader
        self.__name__ = name or "grader_" + re.sub(r"\W+", "_", grader.name).strip("_")
        self._metrics: dict[str, float] = {}
        self._results: list[GraderResult] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        log_metric: Callable[[str, float], None] | None = columns.get("log_metric")
        data = {key: value for key, value in columns.items() if key not in TRAINER_KWARGS}
        if ITEM_COLUMN in data:
            items = [item_value(value) for value in data[ITEM_COLUMN]]
        else:
            items = [{key: values[i] for key, values in data.items()} for i in range(len(completions))]
        start = time.monotonic()
        results = self.grader.grade_batch([completion_text(c) for c in completions], items)
        self._results = results
        self._metrics = batch_metrics(results, time.monotonic() - start)
        if log_metric is not None:
            for key, value in self._metrics.items():
                log_metric(key, value)
        return [result.reward for result in results]

    def last_metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def last_results(self) -> list[GraderResult]:
        return list(self._results)


def batch_metrics(results: list[GraderResult], seconds: float) -> dict[str, float]:
    metrics: dict[str, float] = {"grader/seconds": seconds}
    subs: dict[str, list[float]] = {}
    for result in results:
        for name, reward in result.sub_rewards.items():
            subs.setdefault(name, []).append(reward)
    for name, rewards in subs.items():
        metrics[f"grader/{name}/mean"] = sum(rewards) / len(rewards)
    errors = Counter(flag for result in results for flag in result.errors.flags)
    for flag, count in errors.items():
        metrics[f"grader/errors/{flag}"] = float(count)
    return metrics


def reward_function(
    grader: dict[str, Any] | Grader, settings: GraderSettings | dict[str, Any] | None = None, name: str | None = None
) -> RewardFunction:
    """A reward function for GRPOTrainer from a grader dict (checked as a request's ``grader``) or a Grader."""
    if isinstance(settings, dict):
        settings = GraderSettings.from_dict(settings)
    compiled = grader if isinstance(grader, Grader) else compile_grader(grader, settings)
    return RewardFunction(compiled, name)
