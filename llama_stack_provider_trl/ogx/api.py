"""OpenAI's fine-tuning API as an OGX external API: its objects, the protocol a provider implements, its routes.

OGX loads this module through the spec in ``apis/fine_tuning.yaml`` (``external_apis_dir``): it calls
``available_providers()`` once the API is added (so ``Api("fine_tuning")`` exists then, not at import time), and
``create_router(impl)`` with the provider once the stack is up. The objects are OpenAI's, field for field, so the
``openai`` SDK parses every one; ``paused`` is the one status OpenAI's API returns that its SDK's type lacks.

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, answered by the routes themselves
(``OpenAIErrorRoute``): OGX would answer FastAPI's own errors as ``{"detail": ...}`` and drop the keep-alive
connection after errors it has no handler for.
"""

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from ogx.core.access_control.access_control import AccessDeniedError
from ogx_api import Api, InlineProviderSpec, ProviderSpec
from pydantic import BaseModel, ConfigDict, Field

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.internal_errors import report_internal_error
from llama_stack_provider_trl.graders import GraderSettings
from llama_stack_provider_trl.ogx.graders import RunGraderRequest, graders_router

logger = logging.getLogger(__name__)

API_NAME = "fine_tuning"
JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]
MethodType = Literal["supervised", "dpo", "reinforcement"]
Auto = Literal["auto"]


# -- objects ------------------------------------------------------------------------------------------------------
class Hyperparameters(BaseModel):
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    n_epochs: Auto | int | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Auto | float | None = None


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters | None = None


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class ReinforcementHyperparameters(Hyperparameters):
    model_config = ConfigDict(extra="forbid")

    compute_multiplier: Auto | float | None = None
    eval_interval: Auto | int | None = None
    eval_samples: Auto | int | None = None
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None


class ReinforcementMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]  # checked by llama_stack_provider_trl.graders
    hyperparameters: ReinforcementHyperparameters | None = None


class Method(BaseModel):
    type: MethodType
    dpo: DpoMethod | None = None
    supervised: SupervisedMethod | None = None
    reinforcement: ReinforcementMethod | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    user_provided_suffix: str | None = None


class FineTuningJobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None
    train_reward: float | None = None  # reinforcement jobs
    valid_reward: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class CreateFineTuningJobRequest(BaseModel):
    """The body of ``client.fine_tuning.jobs.create``; ``trl`` (sent with ``extra_body``) holds provider settings."""

    model_config = ConfigDict(extra="forbid")

    model: str
    training_file: str
    validation_file: str | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(
        default=None, description="OpenAI's deprecated top-level form of method.supervised.hyperparameters."
    )
    suffix: str | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    trl: dict[str, Any] | None = Field(
        default=None, description="Per-job provider settings: any provider config field marked per-job."
    )


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for member in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names |= _field_names(member)
    return names


_FIELD_NAMES = _field_names(CreateFineTuningJobRequest) | _field_names(RunGraderRequest)


# -- errors -------------------------------------------------------------------------------------------------------
class OpenAIError(Exception):
    """An error this API answers in OpenAI's shape."""

    def __init__(self, status: HTTPStatus, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code or _CODES.get(status, "invalid_request")


_CODES = {
    HTTPStatus.BAD_REQUEST: "invalid_value",
    HTTPStatus.FORBIDDEN: "permission_denied",
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.CONFLICT: "invalid_state",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too_large",
    HTTPStatus.TOO_MANY_REQUESTS: "rate_limit_exceeded",
    HTTPStatus.INSUFFICIENT_STORAGE: "insufficient_storage",
}
_VALIDATION_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestError):
        exc = OpenAIError(exc.status, str(exc), param=exc.field)
    elif isinstance(exc, RequestValidationError):
        exc = _validation_error(exc)
    elif isinstance(exc, AccessDeniedError):  # OGX's access policy refused the action
        exc = OpenAIError(HTTPStatus.FORBIDDEN, str(exc))
    elif not isinstance(exc, OpenAIError):  # nothing internal for the caller; the log has it under an id
        exc = OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, report_internal_error(exc, "answer this request"), code="")
    kind = "server_error" if exc.status >= 500 else "invalid_request_error"
    body = {"message": str(exc), "type": kind, "param": exc.param, "code": exc.code or None}
    return JSONResponse({"error": body}, status_code=exc.status)


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    """The first invalid parameter, and what is wrong with it (pydantic reports each member of a union apart)."""
    errors = exc.errors()
    param = _param(errors[0])
    problems = dict.fromkeys(str(error.get("msg")) for error in errors if _param(error) == param)
    return OpenAIError(
        HTTPStatus.BAD_REQUEST,
        f"{param or 'body'}: {'; or '.join(problems)}",
        param=param,
        code=_VALIDATION_CODES.get(errors[0].get("type", "")),
    )


def _param(error: dict[str, Any]) -> str | None:
    """The parameter's dotted name: the location's field names and list positions, without pydantic's names of
    union members (``int``, ``literal['auto']``)."""
    location = [part for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    names: list[str] = []
    for position, part in enumerate(location):
        last = position == len(location) - 1
        if isinstance(part, int) or part in _FIELD_NAMES or (last and error.get("type") == "extra_forbidden"):
            names.append(str(part))
        else:
            break
    return ".".join(names) or None


class OpenAIErrorRoute(APIRoute):
    """Answers every error of its endpoint, request validation included, in OpenAI's shape, itself: the
    connection stays open and the SDK's error carries ``param`` and ``code``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_response(exc)

        return answer


# -- the API ------------------------------------------------------------------------------------------------------
class FineTuning(Protocol):
    config: Any  # the provider config: its grader_* fields are the grader endpoints' settings

    async def create_fine_tuning_job(self, request: CreateFineTuningJobRequest) -> FineTuningJob: ...

    async def list_fine_tuning_jobs(
        self, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> FineTuningJobList: ...

    async def retrieve_fine_tuning_job(self, job_id: str) -> FineTuningJob: ...

    async def cancel_fine_tuning_job(self, job_id: str) -> FineTuningJob: ...

    async def pause_fine_tuning_job(self, job_id: str) -> FineTuningJob: ...

    async def resume_fine_tuning_job(self, job_id: str) -> FineTuningJob: ...

    async def list_fine_tuning_events(self, job_id: str, after: str | None, limit: int) -> FineTuningJobEventList: ...

    async def list_fine_tuning_checkpoints(
        self, job_id: str, after: str | None, limit: int
    ) -> FineTuningJobCheckpointList: ...

    async def delete_fine_tuned_model(self, model: str) -> dict[str, Any]: ...

    async def share_fine_tuned_model(self, model: str, project_ids: list[str]) -> list[dict[str, Any]]: ...

    async def fine_tuned_model_permissions(self, model: str) -> list[dict[str, Any]]: ...

    async def unshare_fine_tuned_model(self, model: str, permission_id: str) -> dict[str, Any]: ...


def available_providers() -> list[ProviderSpec]:
    return [
        InlineProviderSpec(
            api=Api(API_NAME),
            provider_type="inline::trl",
            pip_packages=["llama-stack-provider-trl[ogx]"],
            module="llama_stack_provider_trl.ogx",
            config_class="llama_stack_provider_trl.config.TrlPostTrainingConfig",
            api_dependencies=[Api.files],
            optional_api_dependencies=[Api.models],  # with an inference API: succeeded jobs' models are served
            description="OpenAI-compatible fine-tuning (DPO) with Hugging Face TRL, one OS process per job.",
        )
    ]


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """``metadata[key]=value`` query parameters, as the openai SDK sends its ``metadata`` filter."""
    found = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    return found or None


class DeletedModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


def create_router(impl: FineTuning) -> APIRouter:
    root = APIRouter()
    root.include_router(_jobs_router(impl))
    # OpenAI's "delete a fine-tuned model", which OGX's models API lacks (it only lists and reads)
    models = APIRouter(prefix="/v1/models", tags=["Models"], route_class=OpenAIErrorRoute)

    @models.delete("/{model:path}", response_model=DeletedModel)
    async def delete_model(model: str) -> DeletedModel:
        return DeletedModel.model_validate(await impl.delete_fine_tuned_model(model))

    root.include_router(models)
    root.include_router(_permissions_router(impl))
    return root


class CheckpointPermission(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str


class CheckpointPermissionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointPermission]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class CreateCheckpointPermissionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_ids: list[str] = Field(min_length=1)


class DeletedCheckpointPermission(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    deleted: bool


def _permissions_router(impl: FineTuning) -> APIRouter:
    """OpenAI's checkpoint permissions, on a succeeded job's fine_tuned_model: a project's users may call it."""
    router = APIRouter(prefix="/v1/fine_tuning/checkpoints", tags=["Fine Tuning"], route_class=OpenAIErrorRoute)

    def listed(permissions: list[dict[str, Any]]) -> CheckpointPermissionList:
        data = [CheckpointPermission.model_validate(p) for p in permissions]
        return CheckpointPermissionList(
            data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
        )

    @router.post("/{checkpoint:path}/permissions", response_model=CheckpointPermissionList)
    async def create(checkpoint: str, request: CreateCheckpointPermissionRequest) -> CheckpointPermissionList:
        return listed(await impl.share_fine_tuned_model(checkpoint, request.project_ids))

    @router.get("/{checkpoint:path}/permissions", response_model=CheckpointPermissionList)
    async def retrieve(checkpoint: str, project_id: str | None = None) -> CheckpointPermissionList:
        permissions = await impl.fine_tuned_model_permissions(checkpoint)
        return listed([p for p in permissions if project_id is None or p["project_id"] == project_id])

    @router.delete("/{checkpoint:path}/permissions/{permission_id}", response_model=DeletedCheckpointPermission)
    async def delete(checkpoint: str, permission_id: str) -> DeletedCheckpointPermission:
        return DeletedCheckpointPermission.model_validate(
            await impl.unshare_fine_tuned_model(checkpoint, permission_id)
        )

    return router


def _jobs_router(impl: FineTuning) -> APIRouter:
    router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["Fine Tuning"], route_class=OpenAIErrorRoute)

    @router.post("", response_model=FineTuningJob)
    async def create(request: CreateFineTuningJobRequest) -> FineTuningJob:
        return await impl.create_fine_tuning_job(request)

    @router.get("", response_model=FineTuningJobList)
    async def list_jobs(
        request: Request, after: str | None = None, limit: int = Query(default=20, ge=1, le=100)
    ) -> FineTuningJobList:
        return await impl.list_fine_tuning_jobs(after, limit, _metadata_filter(request))

    @router.get("/{job_id}", response_model=FineTuningJob)
    async def retrieve(job_id: str) -> FineTuningJob:
        return await impl.retrieve_fine_tuning_job(job_id)

    @router.post("/{job_id}/cancel", response_model=FineTuningJob)
    async def cancel(job_id: str) -> FineTuningJob:
        return await impl.cancel_fine_tuning_job(job_id)

    @router.post("/{job_id}/pause", response_model=FineTuningJob)
    async def pause(job_id: str) -> FineTuningJob:
        return await impl.pause_fine_tuning_job(job_id)

    @router.post("/{job_id}/resume", response_model=FineTuningJob)
    async def resume(job_id: str) -> FineTuningJob:
        return await impl.resume_fine_tuning_job(job_id)

    @router.get("/{job_id}/events", response_model=FineTuningJobEventList)
    async def list_events(
        job_id: str, after: str | None = None, limit: int = Query(default=20, ge=1, le=1000)
    ) -> FineTuningJobEventList:
        return await impl.list_fine_tuning_events(job_id, after, limit)

    @router.get("/{job_id}/checkpoints", response_model=FineTuningJobCheckpointList)
    async def list_checkpoints(
        job_id: str, after: str | None = None, limit: int = Query(default=10, ge=1, le=100)
    ) -> FineTuningJobCheckpointList:
        return await impl.list_fine_tuning_checkpoints(job_id, after, limit)

    door = APIRouter()
    door.include_router(router)
    door.include_router(graders_router(GraderSettings.from_config(impl.config), OpenAIErrorRoute))
    return door
