"""TrlPostTrainingImpl: Llama Stack's PostTraining protocol over TRL's DPOTrainer."""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.job_spec import SFTJobSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import admit
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.intake import submit_job, write_job
from llama_stack_provider_trl.engine.job_record import CheckpointRecord, JobRecord
from llama_stack_provider_trl.engine.job_request import Given, JobRequest
from llama_stack_provider_trl.engine.job_view import JobView
from llama_stack_provider_trl.engine.jobs import JobAlreadyFinished, JobNotFound
from llama_stack_provider_trl.engine.service import open_job_manager, start_job_manager
from llama_stack_provider_trl.job_access import job_access
from llama_stack_provider_trl.stack_api import (
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
    SupervisedFineTuneRequest,
    stack_error,
)
from llama_stack_provider_trl.stack_requests import dpo_job_request, sft_job_request

logger = logging.getLogger(__name__)


def _answers_request_errors[**P, R](method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The engine's RequestError, answered as this server's error of the same status."""

    @functools.wraps(method)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except RequestError as exc:
            raise stack_error(exc.status, str(exc)) from exc

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
        self.access = job_access(policy or [])
        self.datasetio_api = datasetio_api
        self.datasets_api = datasets_api
        self.models_api = models_api
        self.output_root = Path(config.output_dir).expanduser().resolve()
        self.jobs = open_job_manager(config)
        self.view = JobView()
        self.device = "cpu"

    async def initialize(self) -> None:
        self.device = start_job_manager(self.jobs, self.config, self.output_root)

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.jobs.shutdown)

    @_answers_request_errors
    async def supervised_fine_tune(self, request: SupervisedFineTuneRequest) -> PostTrainingJob:
        return await self._start(sft_job_request(request))

    @_answers_request_errors
    async def preference_optimize(self, request: PreferenceOptimizeRequest) -> PostTrainingJob:
        return await self._start(dpo_job_request(request))

    async def _start(self, job_request: JobRequest) -> PostTrainingJob:
        owner = self.access.caller()
        self.access.require("create", job_request.job_uuid.value, owner)
        job = await admit(
            job_request,
            self.config,
            output_root=self.output_root,
            device=self.device,
            job_exists=self.jobs.exists,
            sources=self,
            caller=self.access.admission_caller(self.jobs, owner),
            checkpoint_path=self.jobs.checkpoint_path,
        )
        # Nothing from here on waits: no other request is admitted between the caller's queue count and the submit.
        write_problem = write_job(job, job_request.job_uuid.field)
        submit_job(self.jobs, job, write_problem, job_request.job_uuid.field, owner)
        return PostTrainingJob(job_uuid=job.spec.job_uuid)

    async def get_training_jobs(self) -> ListPostTrainingJobsResponse:
        visible = self.access.visible(self.jobs.list())
        return ListPostTrainingJobsResponse(data=[PostTrainingJob(job_uuid=r.job_uuid) for r in visible])

    async def get_training_job_status(self, request: GetTrainingJobStatusRequest) -> PostTrainingJobStatusResponse:
        record = self._get(request.job_uuid)
        return PostTrainingJobStatusResponse(
            job_uuid=record.job_uuid,
            # 0.6.1 has no paused state (only OGX's API pauses): a paused job waits, as a scheduled one does
            status=JobStatus("scheduled" if record.status == "paused" else record.status),
            scheduled_at=record.scheduled_at,
            started_at=record.started_at,
            completed_at=record.completed_at,
            resources_allocated=_resources_allocated(record) | self.view.observed(record),
            checkpoints=_checkpoints(record),
        )

    async def cancel_training_job(self, request: CancelTrainingJobRequest) -> None:
        record = self._get(request.job_uuid)
        self.access.require("update", record.job_uuid, record.owner)  # may see it, may not stop it: 403
        try:
            self.jobs.cancel(request.job_uuid)
        except JobNotFound as exc:
            raise JobNotFoundError(request.job_uuid) from exc
        except JobAlreadyFinished as exc:
            raise ConflictError(str(exc)) from exc

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
        """The job, if the caller may see it; a job it may not see is answered exactly as one that does not exist."""
        try:
            record = self.jobs.get(job_uuid)
        except JobNotFound as exc:
            raise JobNotFoundError(job_uuid) from exc
        if not self.access.may_read(record):
            raise JobNotFoundError(job_uuid)
        return record


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


def _algorithm_settings(record: JobRecord) -> dict[str, Any]:
    spec = record.spec
    if isinstance(spec, SFTJobSpec):
        # completion, assistant or all: the tokens that carry the loss, once the recipe has read the rows
        return {"loss_on": record.setup.get("loss_on", "completion" if spec.completion_only_loss else "all")}
    return {
        "reference_strategy": spec.reference_strategy,
        "loss_type": spec.loss_types,
        "loss_weights": spec.loss_weights,
        "beta": spec.beta,
    }


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
        **_algorithm_settings(record),
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
    }
