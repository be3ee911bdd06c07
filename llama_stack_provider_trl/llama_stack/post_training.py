"""TrlPostTrainingImpl: Llama Stack's PostTraining protocol over TRL's DPOTrainer."""

import functools
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from llama_stack_provider_trl.algorithms import ALGORITHMS
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.internal_errors import report_internal_error
from llama_stack_provider_trl.engine.job_record import CheckpointRecord, JobRecord
from llama_stack_provider_trl.engine.job_request import Given, JobRequest
from llama_stack_provider_trl.engine.jobs import JobAlreadyFinished, JobNotFound
from llama_stack_provider_trl.engine.shared_server import server_has_auth, warn_if_open
from llama_stack_provider_trl.llama_stack.access import job_access
from llama_stack_provider_trl.llama_stack.stack_api import (
    AccessDeniedError,
    AccessRule,
    CancelTrainingJobRequest,
    Checkpoint,
    ConflictError,
    DatasetIO,
    DatasetNotFoundError,
    Datasets,
    FieldDatasetNotFoundError,
    GetDatasetRequest,
    GetModelRequest,
    GetTrainingJobArtifactsRequest,
    GetTrainingJobStatusRequest,
    IterRowsRequest,
    JobNotFoundError,
    JobStatus,
    ListPostTrainingJobsResponse,
    ModelNotFoundError,
    Models,
    PostTrainingJob,
    PostTrainingJobArtifactsResponse,
    PostTrainingJobStatusResponse,
    PostTrainingMetric,
    PreferenceOptimizeRequest,
    ResourceNotFoundError,
    SupervisedFineTuneRequest,
    stack_error,
)
from llama_stack_provider_trl.llama_stack.stack_requests import dpo_job_request, sft_job_request
from llama_stack_provider_trl.llama_stack.status_extras import StatusExtras

logger = logging.getLogger(__name__)

CONFIG_VARIABLE = "LLAMA_STACK_CONFIG"  # the run config's path, which `llama stack run` exports to its server
SERVER_PATHS = ("pid", "job_dir", "log_path", "curves")  # status keys shown only where show_server_paths says


def _remote(run: str | None) -> str | None:
    """A tracker's run as callers see it without the server's paths: a tracking server's URL, not a local store."""
    return run if run is not None and run.startswith(("http://", "https://")) else None


# The errors this front door answers on purpose (each one the server answers without dropping the connection)
ANSWERED = (ConflictError, ResourceNotFoundError, AccessDeniedError)


def _answers_request_errors[**P, R](method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The engine's RequestError, answered as this server's error of the same status; an error no check foresaw,
    as a 500 that names an id the server's log holds, and nothing internal (engine/internal_errors.py)."""

    @functools.wraps(method)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except RequestError as exc:
            raise stack_error(exc.status, str(exc)) from exc
        except ANSWERED:
            raise
        except Exception as exc:
            message = report_internal_error(exc, "answer this request")
            raise stack_error(HTTPStatus.INTERNAL_SERVER_ERROR, message) from None

    return answer


class TrlPostTrainingImpl:
    def __init__(
        self,
        config: TrlPostTrainingConfig,
        datasetio_api: DatasetIO,
        datasets_api: Datasets,
        models_api: Models | None = None,
        policy: list[AccessRule] | None = None,
    ) -> None:
        self.config = config
        auth = server_has_auth(CONFIG_VARIABLE)
        self.engine = Engine(config, job_access(policy or []), auth)
        self.datasetio_api = datasetio_api
        self.datasets_api = datasets_api
        self.models_api = models_api
        self.extras = StatusExtras()
        warn_if_open(config, auth)

    async def initialize(self) -> None:
        self.engine.start()

    async def shutdown(self) -> None:
        await self.engine.shutdown()

    @_answers_request_errors
    async def supervised_fine_tune(self, request: SupervisedFineTuneRequest) -> PostTrainingJob:
        return await self._start(sft_job_request(request))

    @_answers_request_errors
    async def preference_optimize(self, request: PreferenceOptimizeRequest) -> PostTrainingJob:
        return await self._start(dpo_job_request(request))

    async def _start(self, job_request: JobRequest) -> PostTrainingJob:
        job = await self.engine.create(job_request, sources=self)
        return PostTrainingJob(job_uuid=job.spec.job_uuid)

    @_answers_request_errors
    async def get_training_jobs(self) -> ListPostTrainingJobsResponse:
        return ListPostTrainingJobsResponse(data=[PostTrainingJob(job_uuid=r.job_uuid) for r in self.engine.visible()])

    @_answers_request_errors
    async def get_training_job_status(self, request: GetTrainingJobStatusRequest) -> PostTrainingJobStatusResponse:
        record = self._get(request.job_uuid)
        return PostTrainingJobStatusResponse(
            job_uuid=record.job_uuid,
            # 0.6.1 has no paused state (only OGX's API pauses): a paused job waits, as a scheduled one does
            status=JobStatus("scheduled" if record.status == "paused" else record.status),
            scheduled_at=record.scheduled_at,
            started_at=record.started_at,
            completed_at=record.completed_at,
            resources_allocated=self._shown(_resources_allocated(record) | self.extras.observed(record)),
            checkpoints=_checkpoints(record),
        )

    def _shown(self, allocated: dict[str, Any]) -> dict[str, Any]:
        """Status as callers see it: the server's paths and process ids only where show_server_paths says."""
        if self.engine.show_paths:
            return allocated
        trackers = {
            name: {**tracker, "run": _remote(tracker["run"])} for name, tracker in allocated["trackers"].items()
        }
        return {**allocated, **dict.fromkeys(SERVER_PATHS), "trackers": trackers}

    @_answers_request_errors
    async def cancel_training_job(self, request: CancelTrainingJobRequest) -> None:
        try:
            self.engine.cancel(request.job_uuid)
        except JobNotFound as exc:
            raise JobNotFoundError(request.job_uuid) from exc
        except JobAlreadyFinished as exc:
            raise ConflictError(str(exc)) from exc

    @_answers_request_errors
    async def get_training_job_artifacts(
        self, request: GetTrainingJobArtifactsRequest
    ) -> PostTrainingJobArtifactsResponse:
        record = self._get(request.job_uuid)
        return PostTrainingJobArtifactsResponse(job_uuid=record.job_uuid, checkpoints=_checkpoints(record))

    # -- RequestSources: what admission reads through this stack --------------------------------------------------
    async def registered_model_path(self, model: str) -> str | None:
        """A model registered with the stack trains from metadata.model_path, else its provider_resource_id (a
        local directory or a Hub id)."""
        if self.models_api is None:
            return None
        try:
            registered = await self.models_api.get_model(GetModelRequest(model_id=model))
        except ModelNotFoundError:
            return None
        return (registered.metadata or {}).get("model_path") or registered.provider_resource_id or model

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        try:
            await self.datasets_api.get_dataset(GetDatasetRequest(dataset_id=dataset_id.value))
        except DatasetNotFoundError as exc:
            raise FieldDatasetNotFoundError(dataset_id.field, dataset_id.value) from exc
        page = await self.datasetio_api.iterrows(IterRowsRequest(dataset_id=dataset_id.value, limit=limit))
        return page.data

    def _get(self, job_uuid: str) -> JobRecord:
        try:
            return self.engine.get(job_uuid)
        except JobNotFound as exc:
            raise JobNotFoundError(job_uuid) from exc


def _checkpoints(record: JobRecord) -> list[Checkpoint]:
    return [
        Checkpoint(
            identifier=c.identifier,
            created_at=c.created_at,
            epoch=c.epoch,
            post_training_job_id=record.job_uuid,
            path=c.path,
            training_metrics=_training_metrics(c),
        )
        for c in record.checkpoints
    ]


def _training_metrics(checkpoint: CheckpointRecord) -> PostTrainingMetric | None:
    # PostTrainingMetric requires validation_loss and perplexity: without a validation set there are none, and the
    # checkpoint's train loss is in resources_allocated["checkpoints"].
    if checkpoint.train_loss is None or checkpoint.eval_loss is None or checkpoint.perplexity is None:
        return None
    return PostTrainingMetric(
        epoch=checkpoint.epoch,
        train_loss=checkpoint.train_loss,
        validation_loss=checkpoint.eval_loss,
        perplexity=checkpoint.perplexity,
    )


def _resources_allocated(record: JobRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "algorithm": spec.algorithm,
        "phase": record.phase,
        "model": spec.model,
        "device": spec.device,
        "cpu_threads": record.setup.get("cpu_threads"),  # each process's, once the recipe has set up
        "executor": "ray" if spec.ray_address else "local",
        "world_size": spec.num_processes,
        "strategy": spec.parallel_strategy,
        "precision": record.setup.get("precision", spec.precision),
        "optimizer": record.setup.get("optimizer", spec.optimizer),
        **ALGORITHMS[spec.algorithm].shown(spec, record.setup),
        "lora": spec.lora.model_dump() if spec.lora else None,
        "padding_free": record.setup.get("padding_free", spec.padding_free),  # auto, until the job resolves it
        "master_weights": record.setup.get("master_weights", spec.master_weights),
        "torch_compile": spec.torch_compile,
        "pid": record.pid,
        "job_dir": spec.job_dir,
        "log_path": str(record.log_path),
        "train_rows": spec.num_rows,
        "eval_rows": spec.num_eval_rows,
        "step": record.step,
        "total_steps": record.total_steps,
        "epoch": record.epoch,
        "n_epochs": spec.n_epochs,
        "metrics": record.metrics,
        "eval_metrics": record.eval_metrics,
        "checkpoints": [c.model_dump(mode="json", exclude={"created_at"}) for c in record.checkpoints],
        "tokens_per_s": record.tokens_per_s,
        "mfu": record.mfu,
        "padding_share": record.padding_share,
        "peak_memory_gib": record.peak_memory_gib,
        "peak_memory_gib_per_rank": record.peak_memory_gib_per_rank,
        "error": record.error,
        "exit_code": record.exit_code,
        "attempts": record.attempts,
        "warm_start": record.warm_start,
        "note": record.note,
        "waiting": record.waiting,
    }
