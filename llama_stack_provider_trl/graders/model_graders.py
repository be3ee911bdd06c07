"""score_model and label_model: a chat model at the operator's endpoint reads the rendered messages and answers
a score or a label. The answer may be JSON (``{"result": ...}``, as OpenAI asks its grader models) or plain text
(the first number; the one label it names)."""

import json
import math
import re
from typing import Any, ClassVar

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.base import Fields, Grader
from llama_stack_provider_trl.graders.model_client import ModelServerError, chat_completion
from llama_stack_provider_trl.graders.result import GraderResult
from llama_stack_provider_trl.graders.settings import GraderSettings
from llama_stack_provider_trl.graders.templates import Sample, Template, parse_template

ROLES = ("user", "assistant", "system", "developer")
SAMPLING_PARAMS = ("max_completions_tokens", "reasoning_effort", "seed", "temperature", "top_p")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

# One piece of a message's content: ("text", template) or ("image", template of its URL).
ContentPart = tuple[str, Template]


class ModelGrader(Grader):
    """What score_model and label_model share: the model, its messages (templates), the call."""

    known: ClassVar[tuple[str, ...]] = ("type", "name", "model", "input")

    def __init__(self, spec: dict[str, Any], field: str, settings: GraderSettings) -> None:
        self.fields = Fields(spec, field, self.known)
        super().__init__(spec, self.fields.name())
        self.model = self.fields.string("model")
        if not settings.model_base_url:
            raise RequestError(
                self.fields.path("model"),
                f"a {self.type} grader needs a grader model server, and this server has none configured (the "
                "operator sets grader_model_base_url); use string_check, text_similarity or python instead",
            )
        self.settings = settings
        self.messages = self._messages(self.fields.required("input"), self.fields.path("input"))
        self.sampling: dict[str, Any] = {}

    @staticmethod
    def _messages(messages: Any, field: str) -> list[tuple[str, list[ContentPart]]]:
        if not isinstance(messages, list) or not messages:
            raise RequestError(field, "must be a non-empty list of messages {role, content}")
        parsed = []
        for index, message in enumerate(messages):
            path = f"{field}.{index}"
            fields = Fields(message, path, ("role", "content", "type"))
            role = fields.choice("role", ROLES)
            if message.get("type") not in (None, "message"):
                raise RequestError(fields.path("type"), "must be 'message'")
            parsed.append((role, _content(fields.required("content"), fields.path("content"))))
        return parsed

    def _render(self, sample: Sample, item: Any) -> list[dict[str, Any]]:
        rendered = []
        for role, parts in self.messages:
            pieces = [(kind, template.render(sample, item)) for kind, template in parts]
            if all(kind == "text" for kind, _ in pieces):
                content: Any = "".join(text for _, text in pieces)
            else:
                content = [
                    {"type": "text", "text": value}
                    if kind == "text"
                    else {"type": "image_url", "image_url": {"url": value}}
                    for kind, value in pieces
                ]
            rendered.append({"role": "system" if role == "developer" else role, "content": content})
        return rendered

    def _answer(self, sample: Sample, item: Any, result: GraderResult) -> str | None:
        """The model's answer text, or None with the flag set."""
        result.sampled_model_name = self.model
        try:
            text, refusal = chat_completion(
                self.settings, self.model, self._render(sample, item), self.sampling, result
            )
        except ModelServerError as exc:
            result.errors.flag("model_grader_server_error", str(exc))
            return None
        if refusal:
            result.errors.flag("model_grader_refusal_error")
            return None
        if text is None:
            result.errors.flag("model_grader_parse_error")
        return text

    def _grade_batch(self, samples: list[Sample], items: list[Any]) -> list[GraderResult]:
        return self._threaded(samples, items, self.settings.model_concurrency)


def _part(kind: str, value: str) -> dict[str, Any]:
    return {"type": "text", "text": value} if kind == "text" else {"type": "image_url", "image_url": {"url": value}}


def _content(content: Any, field: str) -> list[ContentPart]:
    """OpenAI's message content (a string, a typed part, or a list of them) as text and image parts."""
    if isinstance(content, str):
        return [("text", parse_template(content, field))]
    if isinstance(content, list):
        return [part for index, piece in enumerate(content) for part in _content(piece, f"{field}.{index}")]
    if isinstance(content, dict):
        kind = content.get("type")
        if kind in ("input_text", "output_text"):
            return [("text", parse_template(content.get("text"), f"{field}.text"))]
        if kind == "input_image":
            return [("image", parse_template(content.get("image_url"), f"{field}.image_url"))]
        raise RequestError(f"{field}.type", "must be input_text, output_text or input_image (audio is not supported)")
    raise RequestError(field, f"must be a string or a content part, got {type(content).__name__}")


def _json_result(text: str) -> Any:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    return answer.get("result", answer.get("score", answer.get("label"))) if isinstance(answer, dict) else answer


class ScoreModelGrader(ModelGrader):
    type: ClassVar[str] = "score_model"
    known = (*ModelGrader.known, "range", "sampling_params")

    def __init__(self, spec: dict[str, Any], field: str, settings: GraderSettings) -> None:
        super().__init__(spec, field, settings)
        bounds = spec.get("range")
        if bounds is None:
            bounds = [0.0, 1.0]
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in bounds)
            or not bounds[0] < bounds[1]
        ):
            raise RequestError(self.fields.path("range"), "must be two numbers [low, high] with low < high")
        self.low, self.high = float(bounds[0]), float(bounds[1])
        self.sampling = _sampling(spec.get("sampling_params"), self.fields.path("sampling_params"))

    def _score(self, sample: Sample, item: Any, result: GraderResult) -> float:
        text = self._answer(sample, item, result)
        if text is None:
            return 0.0
        value = _json_result(text)
        if not isinstance(value, int | float) or isinstance(value, bool):
            match = _NUMBER.search(text)
            value = float(match.group()) if match else None
        if value is None or not math.isfinite(value) or not self.low <= value <= self.high:
            result.errors.flag("model_grader_parse_error")
            return 0.0
        return float(value)


def _sampling(params: Any, field: str) -> dict[str, Any]:
    """OpenAI's sampling_params as chat completions' body fields."""
    if params is None:
        return {}
    fields = Fields(params, field, SAMPLING_PARAMS)
    body: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "reasoning_effort" and not isinstance(value, str):
            raise RequestError(fields.path(key), "must be a string")
        if key != "reasoning_effort" and not number_ok:
            raise RequestError(fields.path(key), "must be a number")
        if key in ("max_completions_tokens", "seed") and not isinstance(value, int):
            raise RequestError(fields.path(key), "must be an integer")
        body["max_tokens" if key == "max_completions_tokens" else key] = value
    return body


class LabelModelGrader(ModelGrader):
    type: ClassVar[str] = "label_model"
    known = (*ModelGrader.known, "labels", "passing_labels")

    def __init__(self, spec: dict[str, Any], field: str, settings: GraderSettings) -> None:
        super().__init__(spec, field, settings)
        self.labels = _labels(spec.get("labels"), self.fields.path("labels"))
        self.passing = _labels(spec.get("passing_labels"), self.fields.path("passing_labels"))
        outside = [label for label in self.passing if label not in self.labels]
        if outside:
            raise RequestError(self.fields.path("passing_labels"), f"{outside[0]!r} is not one of labels")

    def _score(self, sample: Sample, item: Any, result: GraderResult) -> float:
        text = self._answer(sample, item, result)
        if text is None:
            return 0.0
        label = self._label(text)
        if label is None:
            result.errors.flag("model_grader_parse_error")
            return 0.0
        return 1.0 if label in self.passing else 0.0

    def _label(self, text: str) -> str | None:
        value = _json_result(text)
        candidate = value if isinstance(value, str) else text
        cleaned = candidate.strip().strip("\"'`.*").strip().casefold()
        for label in self.labels:
            if label.casefold() == cleaned:
                return label
        named = [label for label in self.labels if re.search(rf"\b{re.escape(label.casefold())}\b", cleaned)]
        return named[0] if len(named) == 1 else None


def _labels(labels: Any, field: str) -> list[str]:
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) and label for label in labels):
        raise RequestError(field, "must be a non-empty list of non-empty strings")
    return labels
