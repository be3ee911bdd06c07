"""TrlPostTrainingImpl: Llama Stack's PostTraining protocol over TRL's DPOTrainer."""

import asyncio
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE, DPOJobSpec
from llama_stack_provider_trl.common.storage_errors import describe_write_error
from llama_stack_provider_trl.config import WARM_STANDBY_MIN_CPUS, TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import build_job_spec, check_model, dataset_id_of, job_dir_for
from llama_stack_provider_trl.engine.devices import resolve_device
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_record import CheckpointRecord, JobRecord
from llama_stack_provider_trl.engine.job_store import JobStore
from llama_stack_provider_trl.engine.jobs import JobAlreadyExists, JobAlreadyFinished, JobManager, JobNotFound
from llama_stack_provider_trl.engine.model_files import has_chat_template, sliding_window
from llama_stack_provider_trl.engine.preference_rows import PreferenceDataError, PreferenceRows, check_preference_rows
from llama_stack_provider_trl.engine.request_limits import check_dataset_size, check_request_limits
from llama_stack_provider_trl.stack_api import (
    BadRequestError,
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
    InsufficientStorageError,
    IterRowsRequest,
    JobNotFoundError,
    JobStatus,
    ListPostTrainingJobsResponse,
    ModelNotFoundError,
    Models,
    NotImplementedByProviderError,
    PostTrainingJob,
    PostTrainingJobArtifactsResponse,
    PostTrainingJobStatusResponse,
    PostTrainingMetric,
    PreferenceOptimizeRequest,
    SupervisedFineTuneRequest,
    stack_error,
)

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
    ) -> None:
        self.config = config
        self.datasetio_api = datasetio_api
        self.datasets_api = datasets_api
        self.models_api = models_api
        self.output_root = Path(config.output_dir).expanduser().resolve()
        try:
            store = JobStore(config.job_store_path)
        except (sqlite3.Error, OSError) as exc:  # no durable records, no jobs: refuse to start, saying why
            raise RuntimeError(f"job_store_path: cannot open the job store {config.job_store_path}: {exc}") from exc
        self.jobs = JobManager(
            config.max_concurrent_jobs,
            config.cancel_grace_period_s,
            store=store,
            resume_interrupted_jobs=config.resume_interrupted_jobs,
        )
        self.device = "cpu"

    async def initialize(self) -> None:
        try:
            self.output_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # serve status and history anyway; each new job fails saying why
            logger.error("TRL post-training: %s", describe_write_error(self.output_root, exc))
        self.device = resolve_device(self.config.device)
        standby = self.config.warm_standby
        if standby == "auto":
            standby = (os.cpu_count() or 1) >= WARM_STANDBY_MIN_CPUS
        self.jobs.start(standby_device=self.device if standby else None)
        logger.info("TRL post-training: device %s, jobs under %s", self.device, self.output_root)

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.jobs.shutdown)

    async def supervised_fine_tune(self, request: SupervisedFineTuneRequest) -> PostTrainingJob:
        raise NotImplementedByProviderError(
            "supervised_fine_tune is not implemented by the inline::trl provider, which runs DPO only; "
            "use preference_optimize, or configure a provider that implements SFT"
        )

    @_answers_request_errors
    async def preference_optimize(self, request: PreferenceOptimizeRequest) -> PostTrainingJob:
        check_request_limits(request)
        job_dir = job_dir_for(self.output_root, request.job_uuid)
        if self.jobs.exists(request.job_uuid):
            raise ConflictError(f"job_uuid: a job named '{request.job_uuid}' already exists; choose another job_uuid")
        dataset_id = dataset_id_of(request)
        spec = build_job_spec(request, self.config, job_dir, self.device, num_rows=0)  # every field, before I/O
        spec = spec.model_copy(update={"model": await self._registered_model_path(spec.model)})
        train, evaluation = await self._training_and_validation_rows(request, dataset_id)
        _check_chat_template(spec, train)
        _check_padding_free(spec)
        spec = spec.model_copy(
            update={"num_rows": len(train.rows), "num_eval_rows": len(evaluation.rows) if evaluation else 0}
        )

        try:
            job_dir.mkdir()  # atomic claim of the name: a concurrent request with the same job_uuid gets 409
        except FileExistsError as exc:
            raise ConflictError(
                f"job_uuid: '{request.job_uuid}' already has a directory in {self.output_root} from an earlier job; "
                "choose another job_uuid"
            ) from exc
        except OSError as exc:  # the server's storage, not the request, is at fault: the job fails saying so
            return self._submit_failed(spec, f"the job's directory: {describe_write_error(job_dir, exc)}")
        try:
            _write_jsonl(job_dir / TRAIN_DATA_FILE, train.rows)
            if evaluation is not None:
                _write_jsonl(job_dir / EVAL_DATA_FILE, evaluation.rows)
            spec.write()
        except OSError as exc:
            return self._submit_failed(spec, f"the job's data: {describe_write_error(exc.filename or job_dir, exc)}")
        try:
            self.jobs.submit(spec)
        except JobAlreadyExists as exc:
            raise ConflictError(f"job_uuid: a job named '{request.job_uuid}' already exists") from exc
        except (sqlite3.Error, OSError) as exc:
            message = f"the job store {self.config.job_store_path} cannot record the job: {exc}"
            raise InsufficientStorageError(message) from exc
        return PostTrainingJob(job_uuid=request.job_uuid)

    def _submit_failed(self, spec: DPOJobSpec, error: str) -> PostTrainingJob:
        try:
            self.jobs.submit_failed(spec, error)
        except JobAlreadyExists as exc:
            raise ConflictError(f"job_uuid: a job named '{spec.job_uuid}' already exists") from exc
        return PostTrainingJob(job_uuid=spec.job_uuid)

    async def get_training_jobs(self) -> ListPostTrainingJobsResponse:
        return ListPostTrainingJobsResponse(data=[PostTrainingJob(job_uuid=r.job_uuid) for r in self.jobs.list()])

    async def get_training_job_status(self, request: GetTrainingJobStatusRequest) -> PostTrainingJobStatusResponse:
        record = self._get(request.job_uuid)
        return PostTrainingJobStatusResponse(
            job_uuid=record.job_uuid,
            status=JobStatus(record.status),
            scheduled_at=record.scheduled_at,
            started_at=record.started_at,
            completed_at=record.completed_at,
            resources_allocated=_resources_allocated(record),
            checkpoints=_checkpoints(record),
        )

    async def cancel_training_job(self, request: CancelTrainingJobRequest) -> None:
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

    async def _registered_model_path(self, model: str) -> str:
        """A model registered with the stack trains from metadata.model_path, else its provider_resource_id (a
        local directory or a Hub id). A local directory or an unregistered name is used as it is."""
        if self.models_api is None or Path(model).is_absolute():
            return model
        try:
            registered = await self.models_api.get_model(GetModelRequest(model_id=model))
        except ModelNotFoundError:
            return model
        path = (registered.metadata or {}).get("model_path") or registered.provider_resource_id or model
        return check_model(str(path))

    async def _training_and_validation_rows(
        self, request: PreferenceOptimizeRequest, dataset_id: str
    ) -> tuple[PreferenceRows, PreferenceRows | None]:
        data_config = request.training_config.data_config
        data_format = data_config.data_format.value if data_config.data_format else None
        train = await self._preference_rows(dataset_id, "dataset_id", data_format)
        if not data_config.validation_dataset_id:
            return train, None
        evaluation = await self._preference_rows(
            data_config.validation_dataset_id, "validation_dataset_id", data_format
        )
        if (evaluation.shape, evaluation.implicit_prompt) != (train.shape, train.implicit_prompt):
            raise BadRequestError(
                f"training_config.data_config.validation_dataset_id: its rows ({evaluation.shape}, fields "
                f"{list(evaluation.fields)}) differ from the training rows ({train.shape}, fields "
                f"{list(train.fields)}); use one format for both"
            )
        return train, evaluation

    async def _preference_rows(self, dataset_id: str, field: str, data_format: str | None) -> PreferenceRows:
        try:
            await self.datasets_api.get_dataset(GetDatasetRequest(dataset_id=dataset_id))
        except DatasetNotFoundError as exc:
            raise FieldDatasetNotFoundError(f"training_config.data_config.{field}", dataset_id) from exc
        # One row over the limit is enough to refuse an oversize dataset without reading all of it.
        limit = self.config.max_train_rows + 1
        page = await self.datasetio_api.iterrows(IterRowsRequest(dataset_id=dataset_id, limit=limit))
        check_dataset_size(dataset_id, page.data, self.config.max_train_rows, self.config.max_field_chars)
        try:
            return check_preference_rows(dataset_id, page.data, data_format)
        except PreferenceDataError as exc:
            raise BadRequestError(f"training_config.data_config.{field}: {exc}") from exc

    def _get(self, job_uuid: str) -> JobRecord:
        try:
            return self.jobs.get(job_uuid)
        except JobNotFound as exc:
            raise JobNotFoundError(job_uuid) from exc


def _check_chat_template(spec: DPOJobSpec, train: PreferenceRows) -> None:
    if train.shape == "conversational" and has_chat_template(spec.model) is False:
        raise BadRequestError(
            f"training_config.data_config.dataset_id: the rows are conversational (lists of messages) but the "
            f"tokenizer of '{spec.model}' has no chat template to render them; give rows as prompt/chosen/rejected "
            "strings (data_format 'instruct'), or a model whose tokenizer has a chat template"
        )


def _check_padding_free(spec: DPOJobSpec) -> None:
    window = sliding_window(spec.model) if spec.padding_free is True else None  # auto runs such a model padded
    if window is not None and window < spec.max_seq_length:
        raise BadRequestError(
            f"padding_free: '{spec.model}' attends within a sliding window of {window} tokens, shorter than "
            f"max_seq_length {spec.max_seq_length}, and packed sequences cannot keep that window; set padding_free "
            f"false (provider config or hyperparam_search_config), or max_seq_length {window} or less"
        )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


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
        "phase": record.phase,
        "model": spec.model,
        "device": spec.device,
        "precision": record.setup.get("precision", spec.precision),
        "optimizer": record.setup.get("optimizer", spec.optimizer),
        "reference_strategy": spec.reference_strategy,
        "loss_type": spec.loss_types,
        "loss_weights": spec.loss_weights,
        "beta": spec.beta,
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
        "error": record.error,
        "exit_code": record.exit_code,
        "attempts": record.attempts,
        "warm_start": record.warm_start,
        "note": record.note,
    }
