"""The operator's OpenAI-compatible model server, as graders call it: ``/chat/completions`` for score_model and
label_model, ``/embeddings`` for text_similarity's cosine. Plain HTTP (urllib): the training process needs no
client library. A failed call is the sample's ``model_grader_server_error`` with its details, never an exception
out of grading."""

import json
import math
import urllib.error
import urllib.request
from typing import Any

from llama_stack_provider_trl.graders.result import GraderResult, TokenUsage
from llama_stack_provider_trl.graders.settings import GraderSettings

MAX_ERROR_BODY = 500


class ModelServerError(Exception):
    """The model server failed or answered something that is not a chat completion or embeddings list."""


def post_json(settings: GraderSettings, base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    key = settings.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        base_url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.model_timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()[:MAX_ERROR_BODY].decode(errors="replace")
        raise ModelServerError(f"{path} answered HTTP {exc.code}: {text}") from exc
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON
        raise ModelServerError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(answer, dict):
        raise ModelServerError(f"{path} answered {type(answer).__name__}, not an object")
    return answer


def chat_completion(
    settings: GraderSettings, model: str, messages: list[dict[str, Any]], sampling: dict[str, Any], result: GraderResult
) -> tuple[str | None, str | None]:
    """The model's answer text and refusal; its token usage added to ``result``. Raises ModelServerError."""
    assert settings.model_base_url is not None
    answer = post_json(
        settings, settings.model_base_url, "/chat/completions", {"model": model, "messages": messages, **sampling}
    )
    result.token_usage_per_model.setdefault(model, TokenUsage()).add(_usage(answer))
    result.sampled_model_name = str(answer.get("model") or model)
    try:
        message = answer["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelServerError(
            f"/chat/completions answered no choices[0].message: {str(answer)[:MAX_ERROR_BODY]}"
        ) from exc
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content, message.get("refusal")


def cosine_similarity(settings: GraderSettings, text: str, reference: str, result: GraderResult) -> float:
    """The cosine of the two texts' embeddings, negative values as 0 (a reward lies in [0, 1])."""
    assert settings.embeddings_url is not None and settings.embedding_model is not None
    try:
        answer = post_json(
            settings,
            settings.embeddings_url,
            "/embeddings",
            {"model": settings.embedding_model, "input": [text, reference]},
        )
        data = sorted(answer["data"], key=lambda row: row.get("index", 0))
        first, second = (list(map(float, row["embedding"])) for row in data[:2])
    except ModelServerError as exc:
        result.errors.flag("model_grader_server_error", str(exc))
        return 0.0
    except (KeyError, TypeError, ValueError) as exc:
        result.errors.flag("model_grader_server_error", f"/embeddings answered no two embeddings: {exc}")
        return 0.0
    result.token_usage_per_model.setdefault(settings.embedding_model, TokenUsage()).add(_usage(answer))
    norm = math.sqrt(sum(x * x for x in first)) * math.sqrt(sum(y * y for y in second))
    if norm == 0:
        return 0.0
    return max(0.0, min(1.0, sum(x * y for x, y in zip(first, second, strict=False)) / norm))


def _usage(answer: dict[str, Any]) -> TokenUsage:
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    counts = [int(usage.get(key) or 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")]
    return TokenUsage(*counts)
