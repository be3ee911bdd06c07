"""OpenAI's fine-tuning request (``client.fine_tuning.jobs.create``) in the engine's terms: the method and its
hyperparameters as a JobRequest whose fields carry OpenAI's parameter names, and the method as the job runs it."""

import math
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.algorithms.grpo import GRPORequest
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, TrackerRequest
from llama_stack_provider_trl.ogx.api import (
    CreateFineTuningJobRequest,
    DpoHyperparameters,
    DpoMethod,
    Hyperparameters,
    Method,
    MethodType,
    OpenAIError,
    ReinforcementHyperparameters,
    ReinforcementMethod,
    SupervisedMethod,
)

# "auto" hyperparameters take TRL's defaults (per_device_train_batch_size, num_train_epochs); the learning rate is
# learning_rate_multiplier times the provider config's learning_rate (TRL's DPO default unless configured).
AUTO_BATCH_SIZE = 8
AUTO_N_EPOCHS = 3
METADATA_MAX_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def method_of(request: CreateFineTuningJobRequest) -> tuple[MethodType, Hyperparameters, str]:
    """The method (OpenAI's default: supervised), its hyperparameters and the parameter that named them."""
    method = request.method or Method(type="supervised")
    others = {"dpo": method.dpo, "supervised": method.supervised, "reinforcement": method.reinforcement}
    extra = sorted(name for name, given in others.items() if given is not None and name != method.type)
    if extra:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST, f"method.type is '{method.type}': give only method.{method.type}", param="method"
        )
    if method.type != "supervised" and request.hyperparameters is not None:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            "the top-level hyperparameters are OpenAI's deprecated form for supervised jobs; give them in "
            f"method.{method.type}.hyperparameters",
            param="hyperparameters",
        )
    if method.type == "dpo":
        given = method.dpo.hyperparameters if method.dpo else None
        return "dpo", given or DpoHyperparameters(), "method.dpo.hyperparameters"
    if method.type == "reinforcement":
        if method.reinforcement is None:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST,
                'a reinforcement job needs method.reinforcement with its grader: {"grader": {...}, '
                '"hyperparameters": {...}}',
                param="method.reinforcement",
            )
        reinforcement = method.reinforcement.hyperparameters or ReinforcementHyperparameters()
        return "reinforcement", reinforcement, "method.reinforcement.hyperparameters"
    given = method.supervised.hyperparameters if method.supervised else None
    if given is not None and request.hyperparameters is not None:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            "give the hyperparameters once: method.supervised.hyperparameters (the top-level form is deprecated)",
            param="hyperparameters",
        )
    if request.hyperparameters is not None:
        return "supervised", request.hyperparameters, "hyperparameters"
    return "supervised", given or Hyperparameters(), "method.supervised.hyperparameters"


def resolved_method(
    method: MethodType,
    resolved: Hyperparameters,
    spec: Any,
    reinforcement: ReinforcementHyperparameters | None,
    grader: dict[str, Any] | None,
) -> Method:
    """The method with every "auto" replaced by the value the job runs with (the job spec's: DPO's beta,
    reinforcement's validation interval and samples)."""
    if method == "dpo":
        hyperparameters = DpoHyperparameters(**resolved.model_dump(), beta=spec.beta)
        return Method(type="dpo", dpo=DpoMethod(hyperparameters=hyperparameters))
    if method == "reinforcement":
        assert reinforcement is not None and grader is not None
        multiplier = reinforcement.compute_multiplier
        rft = ReinforcementHyperparameters(
            **resolved.model_dump(),
            compute_multiplier=1.0 if multiplier in (None, "auto") else multiplier,
            eval_interval=spec.eval_steps,
            eval_samples=spec.num_generations_eval if spec.eval_steps else None,
            reasoning_effort=reinforcement.reasoning_effort or "default",
        )
        return Method(type="reinforcement", reinforcement=ReinforcementMethod(grader=grader, hyperparameters=rft))
    return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=resolved))


def grader_of(method: Method | None) -> dict[str, Any] | None:
    """A reinforcement job's grader, checked as the graders endpoints check one (a 400 naming its field)."""
    if method is None or method.reinforcement is None:
        return None
    return method.reinforcement.grader


def reinforcement_request(
    hyperparameters: ReinforcementHyperparameters, grader: dict[str, Any] | None, named: str
) -> GRPORequest:
    """OpenAI's reinforcement hyperparameters and grader as GRPO's request fields ("auto" leaves the engine's)."""

    def given(name: str) -> Given[Any] | None:
        value = getattr(hyperparameters, name)
        return None if value is None or value == "auto" else Given(value, f"{named}.{name}")

    return GRPORequest(
        grader=Given(grader, "method.reinforcement.grader") if grader is not None else None,
        compute_multiplier=given("compute_multiplier"),
        eval_interval=given("eval_interval"),
        eval_samples=given("eval_samples"),
        reasoning_effort=given("reasoning_effort"),
    )


def check_options(request: CreateFineTuningJobRequest) -> None:
    if request.suffix is not None and not SUFFIX_PATTERN.match(request.suffix):
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            f"suffix {request.suffix!r}: use 1-64 characters from A-Z a-z 0-9 . _ -",
            param="suffix",
        )
    metadata = request.metadata or {}
    if len(metadata) > METADATA_MAX_KEYS:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST, f"{len(metadata)} keys; at most {METADATA_MAX_KEYS}", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or len(value) > METADATA_VALUE_CHARS:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST,
                f"key {key[:METADATA_KEY_CHARS]!r}: keys take at most {METADATA_KEY_CHARS} characters, values "
                f"{METADATA_VALUE_CHARS}",
                param="metadata",
            )


def trackers_of(integrations: list[dict[str, Any]] | None) -> tuple[TrackerRequest, ...]:
    """OpenAI's integrations as the engine's experiment trackers. Each is ``{"type": T, T: {options}}``: OpenAI's
    ``wandb`` (project, name, entity, tags; plus ``mode``, offline unless "online"), and in the same shape
    ``tensorboard`` and ``mlflow``, whose options are 0.6.1's logger_config ones (engine/trackers.py checks them)."""
    trackers = []
    for index, integration in enumerate(integrations or []):
        field = f"integrations[{index}]"
        kind = integration.get("type")
        if not isinstance(kind, str) or not kind:
            raise RequestError(f"{field}.type", 'missing; an integration is {"type": "wandb", "wandb": {...}}')
        extra = sorted(set(integration) - {"type", kind})
        if extra:
            raise RequestError(f"{field}.{extra[0]}", f"unknown key; an integration of type {kind!r} takes {kind}")
        options = Given(integration.get(kind, {}), f"{field}.{kind}")
        trackers.append(TrackerRequest(name=Given(kind, f"{field}.type"), options=options))
    return tuple(trackers)


def given_or(value: int | str | None, auto: int) -> int:
    return auto if value is None or value == "auto" else int(value)


def number_or_auto(value: float | str | None, field: str) -> Given[float] | None:
    return None if value is None or value == "auto" else Given(float(value), field)


def lr_multiplier(value: float | str | None, field: str) -> float:
    if value is None or value == "auto":
        return 1.0
    if not math.isfinite(value) or value <= 0:
        raise OpenAIError(HTTPStatus.BAD_REQUEST, f"must be a finite number > 0, got {value}", param=field)
    return float(value)


def overrides_of(request: CreateFineTuningJobRequest) -> dict[str, Any]:
    overrides = dict(request.trl or {})
    if request.seed is not None:
        if overrides.get("seed", request.seed) != request.seed:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST, f"seed {request.seed} conflicts with trl.seed {overrides['seed']}", param="seed"
            )
        overrides["seed"] = request.seed
    return overrides


def fine_tuned_name(model: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's ``ft:<base model>:<suffix>:<job>``; the base is a local model's directory name."""
    base = model.split(":")[1] if model.startswith("ft:") else Path(model.rstrip("/")).name or model
    return f"ft:{base}:{suffix or 'trl'}:{job_id}"
