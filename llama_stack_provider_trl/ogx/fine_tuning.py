"""TrlFineTuningImpl: OpenAI's fine-tuning API (api.py) over the engine, reading training data from OGX's Files API.

A job is admitted by the engine (engine/admission.py) from a JobRequest whose fields carry OpenAI's names, so each
refusal names the parameter the caller sent. What OpenAI's job object holds beyond the engine's record (the request
as the caller gave it, the resolved hyperparameters, the result file) is kept in ``openai_job.json`` in the job's
directory, so a restarted server serves the same objects. Each job belongs to the authenticated user who created it
(the engine's record keeps the owner); OGX's access policy decides who else may see and change it (ogx/access.py).
"""

import asyncio
import contextlib
import csv
import io
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

from fastapi import UploadFile
from ogx.core.access_control.datatypes import AccessRule
from ogx_api import Files, ResourceNotFoundError
from ogx_api.files.models import (
    OpenAIFilePurpose,
    RetrieveFileContentRequest,
    RetrieveFileRequest,
    UploadFileRequest,
)
from pydantic import BaseModel

from llama_stack_provider_trl.algorithms import ALGORITHMS
from llama_stack_provider_trl.algorithms.algorithm import MetricNames
from llama_stack_provider_trl.algorithms.dpo import DPORequest
from llama_stack_provider_trl.algorithms.grpo import GRPORequest
from llama_stack_provider_trl.algorithms.sft import SFTRequest
from llama_stack_provider_trl.common.checkpoints import is_final
from llama_stack_provider_trl.common.events import (
    CheckpointSaved,
    Completed,
    Evaluation,
    Failed,
    JobEvent,
    Metrics,
    Paused,
    Resuming,
    SetupDone,
    Started,
)
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import AdmittedJob
from llama_stack_provider_trl.engine.disk_space import format_bytes
from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_record import FINAL_STATES, CheckpointRecord, JobRecord
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, MethodRequest, TrackerRequest
from llama_stack_provider_trl.engine.jobs import JobAlreadyFinished, JobNotFound, WrongJobState
from llama_stack_provider_trl.engine.shared_server import server_has_auth, warn_if_open
from llama_stack_provider_trl.ogx.access import acting_as, job_access
from llama_stack_provider_trl.ogx.api import (
    CheckpointMetrics,
    CreateFineTuningJobRequest,
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    Hyperparameters,
    JobError,
    JobStatus,
    Method,
    MethodType,
    OpenAIError,
    ReinforcementHyperparameters,
    ReinforcementMethod,
    SupervisedMethod,
)
from llama_stack_provider_trl.ogx.fine_tuned_models import FineTunedModels
from llama_stack_provider_trl.ogx.training_files import preference_rows, reinforcement_rows, supervised_rows

logger = logging.getLogger(__name__)

# "auto" hyperparameters take TRL's defaults (per_device_train_batch_size, num_train_epochs); the learning rate is
# learning_rate_multiplier times the provider config's learning_rate (TRL's DPO default unless configured).
AUTO_BATCH_SIZE = 8
AUTO_N_EPOCHS = 3
ORGANIZATION_ID = "local"
OPENAI_JOB_FILE = "openai_job.json"
CONFIG_VARIABLE = "OGX_CONFIG"  # the run config's path, which `ogx run` exports to its server (server.auth)
RESULTS_FILENAME = "step_metrics.csv"
# The reader of each OpenAI method's training files
ROW_READERS = {"supervised": supervised_rows, "dpo": preference_rows, "reinforcement": reinforcement_rows}
METADATA_MAX_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

STATUS: dict[str, JobStatus] = {
    "scheduled": "queued",
    "in_progress": "running",
    "paused": "paused",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


class OpenAIJob(BaseModel):
    """What the OpenAI job object holds beyond the engine's record."""

    id: str
    created_at: int
    model: str
    training_file: str
    validation_file: str | None
    method: Method
    hyperparameters: Hyperparameters
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    fine_tuned_model: str
    integrations: list[dict[str, Any]] = []
    result_files: list[str] = []
    model_registered: bool = False  # fine_tuned_model entered OGX's models table (once: a deleted one stays deleted)
    served_by: str | None = None  # the inference provider serving it: this package's, or a remote::vllm one
    permissions: list[dict[str, Any]] = []  # checkpoint permissions: {id, created_at, project_id}

    def write(self, job_dir: Path) -> None:
        (job_dir / OPENAI_JOB_FILE).write_text(self.model_dump_json(indent=2))


class TrlFineTuningImpl:
    def __init__(
        self, config: TrlPostTrainingConfig, files: Files, policy: list[AccessRule] | None = None, models: Any = None
    ) -> None:
        self.config = config
        self.files = files
        self.engine = Engine(config, job_access(policy or []))
        self._openai: dict[str, OpenAIJob] = {}
        self._results_lock = asyncio.Lock()
        # with OGX's models table (an inference API in ogx-run.yaml), succeeded jobs' models are served
        self.fine_tuned_models = (
            None if models is None else FineTunedModels(models, self.engine.jobs, self._openai, self.engine.final_model)
        )

    async def initialize(self) -> None:
        warn_if_open(self.config, server_has_auth(CONFIG_VARIABLE))
        self.engine.start()
        for record in self.engine.jobs.list():
            path = record.spec.path / OPENAI_JOB_FILE
            if path.is_file():  # jobs without one came through another front door
                try:
                    self._openai[record.job_uuid] = OpenAIJob.model_validate_json(path.read_text())
                except (OSError, ValueError):
                    logger.exception("fine_tuning: skipping job %s, its %s does not load", record.job_uuid, path)
        if self.fine_tuned_models is not None:
            self.fine_tuned_models.start()

    async def shutdown(self) -> None:
        if self.fine_tuned_models is not None:
            await self.fine_tuned_models.stop()
        await self.engine.shutdown()

    # -- create -----------------------------------------------------------------------------------------------------
    async def create_fine_tuning_job(self, request: CreateFineTuningJobRequest) -> FineTuningJob:
        method, hyperparameters, named = _method(request)
        grader = _grader(request.method)
        _check_options(request)
        job_id = f"ftjob-{secrets.token_hex(12)}"
        batch_size = _given_or(hyperparameters.batch_size, AUTO_BATCH_SIZE)
        n_epochs = _given_or(hyperparameters.n_epochs, AUTO_N_EPOCHS)
        multiplier = _lr_multiplier(hyperparameters.learning_rate_multiplier, f"{named}.learning_rate_multiplier")
        reinforcement = hyperparameters if isinstance(hyperparameters, ReinforcementHyperparameters) else None
        algorithm: MethodRequest
        if isinstance(hyperparameters, DpoHyperparameters):
            algorithm = DPORequest(beta=_number_or_auto(hyperparameters.beta, f"{named}.beta"))
        elif reinforcement is not None:
            algorithm = _reinforcement_request(reinforcement, grader, named)
        else:
            algorithm = SFTRequest()
        job_request = JobRequest(
            job_uuid=Given(job_id, "id"),
            model=Given(request.model, "model"),
            method=algorithm,
            n_epochs=Given(n_epochs, f"{named}.n_epochs"),
            dataset_id=Given(request.training_file, "training_file"),
            batch_size=Given(batch_size, f"{named}.batch_size"),
            validation_dataset_id=Given(request.validation_file, "validation_file")
            if request.validation_file
            else None,
            learning_rate=Given(multiplier * self.config.learning_rate, f"{named}.learning_rate_multiplier"),
            overrides=Given(_overrides(request), "trl"),
            trackers=_trackers(request.integrations),
        )
        resolved = Hyperparameters(batch_size=batch_size, learning_rate_multiplier=multiplier, n_epochs=n_epochs)
        kept: list[OpenAIJob] = []

        def keep_openai_job(job: AdmittedJob) -> str | None:
            openai_job = OpenAIJob(
                id=job_id,
                created_at=int(time.time()),
                model=request.model,
                training_file=request.training_file,
                validation_file=request.validation_file,
                method=_resolved_method(method, resolved, job.spec, reinforcement, grader),
                hyperparameters=resolved,
                seed=job.spec.seed,
                suffix=request.suffix,
                metadata=request.metadata,
                fine_tuned_model=_fine_tuned_name(request.model, request.suffix, job_id),
                integrations=request.integrations or [],
            )
            kept.append(openai_job)
            try:
                openai_job.write(job.spec.path)
            except OSError as exc:
                return f"the job's {OPENAI_JOB_FILE}: {exc}"
            return None

        # a job the store cannot record is refused (507) by create: only a recorded job is remembered here
        sources = _UploadedFiles(self, ROW_READERS[method])
        await self.engine.create(job_request, sources, before_submit=keep_openai_job)
        self._openai[job_id] = kept[0]
        return await self._job_object(job_id)

    # -- read -------------------------------------------------------------------------------------------------------
    async def retrieve_fine_tuning_job(self, job_id: str) -> FineTuningJob:
        return await self._job_object(job_id)

    async def list_fine_tuning_jobs(
        self, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> FineTuningJobList:
        visible = {record.job_uuid for record in self.engine.visible()}
        mine = [job for job in self._openai.values() if job.id in visible]
        newest_first = sorted(mine, key=lambda job: (job.created_at, job.id), reverse=True)
        if metadata:
            newest_first = [
                job for job in newest_first if all((job.metadata or {}).get(k) == v for k, v in metadata.items())
            ]
        page, has_more = _page(newest_first, after, limit, "after", lambda job: job.id)
        return FineTuningJobList(data=[await self._job_object(job.id) for job in page], has_more=has_more)

    async def list_fine_tuning_events(self, job_id: str, after: str | None, limit: int) -> FineTuningJobEventList:
        record, openai_job = self._get(job_id)
        events = _events(record, openai_job, self.engine.events(record))[::-1]  # newest first, as OpenAI lists them
        page, has_more = _page(events, after, limit, "after", lambda event: event.id)
        return FineTuningJobEventList(data=page, has_more=has_more)

    async def list_fine_tuning_checkpoints(
        self, job_id: str, after: str | None, limit: int
    ) -> FineTuningJobCheckpointList:
        record, openai_job = self._get(job_id)
        checkpoints = [  # newest first: the record holds them in the order they were saved
            _checkpoint_object(record, openai_job, c) for c in reversed(record.checkpoints) if Path(c.path).exists()
        ]
        page, has_more = _page(checkpoints, after, limit, "after", lambda checkpoint: checkpoint.id)
        return FineTuningJobCheckpointList(
            data=page,
            has_more=has_more,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
        )

    # -- change -----------------------------------------------------------------------------------------------------
    async def cancel_fine_tuning_job(self, job_id: str) -> FineTuningJob:
        self._get(job_id)  # one this front door created
        try:
            self.engine.cancel(job_id)
        except JobAlreadyFinished as exc:
            status = STATUS[self.engine.get(job_id).status]
            raise OpenAIError(
                HTTPStatus.CONFLICT, f"job '{job_id}' already {status}; there is nothing to cancel"
            ) from exc
        return await self._job_object(job_id)

    async def pause_fine_tuning_job(self, job_id: str) -> FineTuningJob:
        return await self._change(job_id, self.engine.pause, "only a queued or running job pauses")

    async def resume_fine_tuning_job(self, job_id: str) -> FineTuningJob:
        return await self._change(job_id, self.engine.resume, "only a paused job resumes")

    async def _change(self, job_id: str, change: Callable[[str], None], allowed: str) -> FineTuningJob:
        self._get(job_id)  # one this front door created
        try:
            change(job_id)
        except WrongJobState as exc:
            raise OpenAIError(HTTPStatus.CONFLICT, f"job '{job_id}' is {STATUS[exc.status]}; {allowed}") from exc
        return await self._job_object(job_id)

    async def share_fine_tuned_model(self, model: str, project_ids: list[str]) -> list[dict[str, Any]]:
        openai_job, record = self._owned_model(model)
        return await self._models().share(openai_job, record, project_ids)

    async def fine_tuned_model_permissions(self, model: str) -> list[dict[str, Any]]:
        openai_job, _ = self._owned_model(model, action="read")
        return list(openai_job.permissions)

    async def unshare_fine_tuned_model(self, model: str, permission_id: str) -> dict[str, Any]:
        openai_job, record = self._owned_model(model)
        return await self._models().unshare(openai_job, record, permission_id)

    def _owned_model(self, model: str, action: Literal["read", "update"] = "update") -> tuple[OpenAIJob, JobRecord]:
        """The job whose fine_tuned_model is ``model``: 404 unless the caller may read the job, OGX's 403 unless it
        may ``action`` it (sharing is the owner's)."""
        found = next((job for job in self._openai.values() if job.fine_tuned_model == model), None)
        record = None
        if found is not None:
            with contextlib.suppress(JobNotFound):
                record = self.engine.get(found.id)
        if found is None or record is None or record.status != "completed":
            raise OpenAIError(
                HTTPStatus.NOT_FOUND,
                f"no fine-tuned model '{model}'; a succeeded job's fine_tuned_model names one",
                param="fine_tuned_model_checkpoint",
            )
        self.engine.access.require(action, found.id, record.owner)
        return found, record

    def _models(self) -> FineTunedModels:
        if self.fine_tuned_models is None:
            raise OpenAIError(HTTPStatus.NOT_FOUND, "this server serves no models (no inference API in its run config)")
        return self.fine_tuned_models

    async def delete_fine_tuned_model(self, model: str) -> dict[str, Any]:
        if self.fine_tuned_models is None:
            raise OpenAIError(HTTPStatus.NOT_FOUND, f"no model '{model}': this server serves no models", param="model")
        return await self.fine_tuned_models.delete(model)

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _get(self, job_id: str) -> tuple[JobRecord, OpenAIJob]:
        """The job, if the caller may see it; a job it may not see is answered exactly as one that does not exist."""
        openai_job = self._openai.get(job_id)
        try:
            if openai_job is None:
                raise JobNotFound(job_id)
            return self.engine.get(job_id), openai_job
        except JobNotFound as exc:
            raise OpenAIError(
                HTTPStatus.NOT_FOUND, f"no fine-tuning job '{job_id}'; client.fine_tuning.jobs.list() lists them"
            ) from exc

    async def _job_object(self, job_id: str) -> FineTuningJob:
        record, openai_job = self._get(job_id)
        status = STATUS[record.status]
        if status == "succeeded" and not openai_job.result_files:
            await self._attach_results(record, openai_job)
        if status == "succeeded" and not openai_job.model_registered and self.fine_tuned_models is not None:
            await self.fine_tuned_models.register(record)  # callable once the caller sees it succeeded
        finished = record.status in FINAL_STATES and record.completed_at is not None
        return FineTuningJob(
            id=job_id,
            created_at=openai_job.created_at,
            error=JobError(code="training_failed", message=_error_message(record.error))
            if status == "failed"
            else None,
            fine_tuned_model=openai_job.fine_tuned_model if status == "succeeded" else None,
            finished_at=int(record.completed_at.timestamp()) if finished and record.completed_at else None,
            hyperparameters=openai_job.hyperparameters,
            model=openai_job.model,
            organization_id=ORGANIZATION_ID,
            result_files=openai_job.result_files,
            seed=openai_job.seed,
            status=status,
            trained_tokens=_trained_tokens(record) if status == "succeeded" else None,
            training_file=openai_job.training_file,
            validation_file=openai_job.validation_file,
            estimated_finish=int(record.estimated_finish.timestamp())
            if status == "running" and record.estimated_finish
            else None,
            integrations=openai_job.integrations,
            metadata=openai_job.metadata,
            method=openai_job.method,
            user_provided_suffix=openai_job.suffix,
        )

    async def _attach_results(self, record: JobRecord, openai_job: OpenAIJob) -> None:
        """Upload the per-step metrics of a succeeded job as a fine-tune-results file, once."""
        async with self._results_lock:
            if openai_job.result_files:
                return
            names = ALGORITHMS[record.spec.algorithm].metrics
            results = _results_csv(self.engine.events(record), names).encode()
            upload = UploadFile(file=io.BytesIO(results), filename=RESULTS_FILENAME)
            # fine-tune-results is a purpose files carry, not one a client may upload with: skip that check
            request = UploadFileRequest.model_construct(purpose=OpenAIFilePurpose.FINE_TUNE_RESULTS, expires_after=None)
            try:
                with acting_as(record.owner):  # the file is the job owner's, whoever reads the job first
                    uploaded = await self.files.openai_upload_file(request, upload)
            except Exception:  # the job stays readable; the next read tries again
                logger.exception("fine_tuning: job %s: its result file could not be stored", record.job_uuid)
                return
            openai_job.result_files = [uploaded.id]
            try:
                openai_job.write(record.spec.path)
            except OSError:
                logger.exception("fine_tuning: job %s: cannot record its result file %s", record.job_uuid, uploaded.id)

    def model_path(self, name: str) -> str | None:
        """The directory a fine-tuned model name (``fine_tuned_model``, ``fine_tuned_model_checkpoint``) names."""
        for openai_job in self._openai.values():
            if name == openai_job.fine_tuned_model or name.startswith(f"{openai_job.fine_tuned_model}:ckpt-"):
                try:
                    record = self.engine.get(openai_job.id)
                except JobNotFound:
                    break  # another user's model: answered as one this server does not have
                if name == openai_job.fine_tuned_model:
                    if record.status != "completed":
                        raise RequestError(
                            "model",
                            f"'{name}' is what job {openai_job.id} trains, and that job is {STATUS[record.status]}; "
                            "use it once the job has succeeded",
                        )
                    return str(self.engine.final_model(record))
                for checkpoint in record.checkpoints:
                    if _checkpoint_name(openai_job, checkpoint.step, checkpoint.identifier) == name:
                        return checkpoint.path
        if name.startswith("ft:"):  # not a Hub id: a fine-tuned model this server does not have
            raise RequestError(
                "model",
                f"no fine-tuned model or checkpoint '{name}' here; a job's fine_tuned_model and its checkpoints' "
                "fine_tuned_model_checkpoint name them",
                HTTPStatus.NOT_FOUND,
            )
        return None


class _UploadedFiles:
    """What admission reads through this front door: fine-tuned model names and uploaded JSONL files."""

    def __init__(
        self, impl: TrlFineTuningImpl, rows_of: Callable[[Given[str], bytes, int], list[dict[str, Any]]]
    ) -> None:
        self._impl = impl
        self._rows_of = rows_of  # the method's reader of a JSONL file

    async def registered_model_path(self, model: str) -> str | None:
        return self._impl.model_path(model)

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        files = self._impl.files
        try:
            uploaded = await files.openai_retrieve_file(RetrieveFileRequest(file_id=dataset_id.value))
            _check_file_size(dataset_id, uploaded.bytes, self._impl.config.max_training_file_bytes)
            content = await files.openai_retrieve_file_content(RetrieveFileContentRequest(file_id=dataset_id.value))
        except (ResourceNotFoundError, ValueError) as exc:
            raise RequestError(
                dataset_id.field,
                f"no file '{dataset_id.value}'; upload it first: client.files.create(file=..., purpose='fine-tune')",
                HTTPStatus.NOT_FOUND,
            ) from exc
        if uploaded.purpose != OpenAIFilePurpose.FINE_TUNE:
            raise RequestError(
                dataset_id.field,
                f"file '{dataset_id.value}' was uploaded with purpose '{uploaded.purpose}'; upload training data with "
                "purpose 'fine-tune'",
            )
        # Parsing a large file takes seconds: on a thread, so the server answers other requests meanwhile
        return await asyncio.to_thread(self._rows_of, dataset_id, content.body, limit)


def _check_file_size(file: Given[str], size: int, limit: int) -> None:
    """Before the file is read: it is held in memory whole (the Files API hands over its content at once)."""
    if size > limit:
        raise RequestError(
            file.field,
            f"file '{file.value}' has {format_bytes(size)}, more than the {format_bytes(limit)} this server reads for "
            "a job (max_training_file_bytes); upload fewer or shorter examples",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


# -- the request --------------------------------------------------------------------------------------------------
def _method(request: CreateFineTuningJobRequest) -> tuple[MethodType, Hyperparameters, str]:
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


def _resolved_method(
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


def _grader(method: Method | None) -> dict[str, Any] | None:
    """A reinforcement job's grader, checked as the graders endpoints check one (a 400 naming its field)."""
    if method is None or method.reinforcement is None:
        return None
    return method.reinforcement.grader


def _reinforcement_request(
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


def _check_options(request: CreateFineTuningJobRequest) -> None:
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


def _trackers(integrations: list[dict[str, Any]] | None) -> tuple[TrackerRequest, ...]:
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


def _given_or(value: int | str | None, auto: int) -> int:
    return auto if value is None or value == "auto" else int(value)


def _number_or_auto(value: float | str | None, field: str) -> Given[float] | None:
    return None if value is None or value == "auto" else Given(float(value), field)


def _lr_multiplier(value: float | str | None, field: str) -> float:
    if value is None or value == "auto":
        return 1.0
    if not math.isfinite(value) or value <= 0:
        raise OpenAIError(HTTPStatus.BAD_REQUEST, f"must be a finite number > 0, got {value}", param=field)
    return float(value)


def _overrides(request: CreateFineTuningJobRequest) -> dict[str, Any]:
    overrides = dict(request.trl or {})
    if request.seed is not None:
        if overrides.get("seed", request.seed) != request.seed:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST, f"seed {request.seed} conflicts with trl.seed {overrides['seed']}", param="seed"
            )
        overrides["seed"] = request.seed
    return overrides


def _fine_tuned_name(model: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's ``ft:<base model>:<suffix>:<job>``; the base is a local model's directory name."""
    base = model.split(":")[1] if model.startswith("ft:") else Path(model.rstrip("/")).name or model
    return f"ft:{base}:{suffix or 'trl'}:{job_id}"


# -- the objects --------------------------------------------------------------------------------------------------
def _page[T](
    items: list[T], after: str | None, limit: int, field: str, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    start = 0
    if after is not None:
        ids = [key(item) for item in items]
        if after not in ids:
            raise OpenAIError(HTTPStatus.BAD_REQUEST, f"no item '{after}' in this list to list after", param=field)
        start = ids.index(after) + 1
    return items[start : start + limit], start + limit < len(items)


def _error_message(error: str | None) -> str:
    """The reason, without the log tail the engine appends."""
    return (error or "the job failed").split("\n--- last lines of", 1)[0]


def _trained_tokens(record: JobRecord) -> int | None:
    tokens = record.metrics.get("num_tokens")
    return int(tokens) if tokens is not None else None


def _checkpoint_name(openai_job: OpenAIJob, step: int, identifier: str) -> str:
    if identifier.endswith("-final"):
        return openai_job.fine_tuned_model
    return f"{openai_job.fine_tuned_model}:ckpt-step-{step}"


def _checkpoint_object(
    record: JobRecord, openai_job: OpenAIJob, checkpoint: CheckpointRecord
) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=f"ftckpt-{checkpoint.identifier}",
        created_at=int(checkpoint.created_at.timestamp()),
        fine_tuned_model_checkpoint=_checkpoint_name(openai_job, checkpoint.step, checkpoint.identifier),
        fine_tuning_job_id=record.job_uuid,
        metrics=CheckpointMetrics(
            step=checkpoint.step,
            train_loss=checkpoint.train_loss,
            valid_loss=checkpoint.eval_loss,
            full_valid_loss=checkpoint.eval_loss,
            train_reward=checkpoint.reward,
            valid_reward=checkpoint.eval_reward,
        ),
        step_number=checkpoint.step,
    )


def _events(record: JobRecord, openai_job: OpenAIJob, job_events: list[JobEvent]) -> list[FineTuningJobEvent]:
    """The job's history, oldest first: its creation, what its training process reported, how it ended."""
    found: list[tuple[float, str, str, dict[str, Any] | None]] = [
        (openai_job.created_at, "info", f"Created fine-tuning job: {openai_job.id}", None),
        (openai_job.created_at, "info", f"Validated training file: {openai_job.training_file}", None),
    ]
    names = ALGORITHMS[record.spec.algorithm].metrics
    for event in job_events:
        described = _describe(event, names)
        if described is not None:
            found.append((event.time, *described))
    if record.status == "scheduled" and record.waiting:  # held back by a per-user limit, not by a full server
        found.append((time.time(), "info", f"Waiting: {record.waiting}", None))
    if record.completed_at is not None and record.status in FINAL_STATES:
        end = record.completed_at.timestamp()
        if record.status == "completed":
            found.append((end, "info", f"New fine-tuned model created: {openai_job.fine_tuned_model}", None))
        elif record.status == "cancelled":
            found.append((end, "info", "Fine-tuning job cancelled", None))
        else:
            found.append((end, "error", f"Fine-tuning job failed: {_error_message(record.error)}", None))
    events = []
    for index, (when, level, message, data) in enumerate(found):
        events.append(
            FineTuningJobEvent(
                id=f"ftevent-{openai_job.id.removeprefix('ftjob-')}-{index}",
                created_at=int(when),
                level=level,  # type: ignore[arg-type]
                message=message,
                data=data,
                type="metrics" if data is not None else "message",
            )
        )
    return events


def _describe(event: JobEvent, names: MetricNames) -> tuple[str, str, dict[str, Any] | None] | None:
    """(level, message, metrics data) of one training process event; None for those OpenAI's API has no word for."""
    match event:
        case Started():
            return "info", "Fine-tuning job started", None
        case SetupDone():
            where = event.device + (f", {event.cpu_threads} CPU thread(s) per process" if event.cpu_threads else "")
            return "info", f"Training {event.total_steps} steps on {event.train_rows} pairs ({where})", None
        case Resuming():
            return "info", f"Resuming from checkpoint {Path(event.checkpoint).name}", None
        case Metrics():
            data = {"step": event.step, "total_steps": event.total_steps, **_train_metrics(event.metrics, names)}
            if event.tokens_per_s is not None:  # real tokens (no padding) a second since step 3, as 0.6.1's status
                data["tokens_per_s"] = event.tokens_per_s
            loss = event.metrics.get("loss")
            message = f"Step {event.step}/{event.total_steps}" + (
                f": training loss={loss:.4f}" if loss is not None else ""
            )
            if event.reward is not None:
                message += f", reward={event.reward.mean:.4f}"
            return "info", message, data
        case Evaluation() if event.reward is not None:
            return "info", f"Validation reward at step {event.step}: {event.reward:.4f}", None
        case Evaluation():
            return "info", f"Validation loss at step {event.step}: {event.metrics.get('eval_loss')}", None
        case CheckpointSaved() if is_final(event.identifier):
            return "info", f"Final model saved at step {event.step}", None
        case CheckpointSaved():
            return "info", f"Checkpoint created at step {event.step}", None
        case Paused():
            return "info", f"Fine-tuning job paused after step {event.step}", None
        case Completed():
            return "info", "The job has successfully completed", None
        case Failed():
            return "error", f"Training failed: {event.error}", None
    return None


def _train_metrics(metrics: dict[str, float], names: MetricNames) -> dict[str, float]:
    named = {"train_loss": "loss", **names.event_names}
    return {**{k: metrics[v] for k, v in named.items() if v in metrics}, **metrics}


def _result_columns(names: MetricNames, logged: set[str]) -> dict[str, str]:
    """The result file's columns (TRL's logged name of each): the loss, the algorithm's training metrics, the
    learning rate, the validation loss, the algorithm's validation metrics, then those its patterns match among the
    ``logged`` names (GRPO: each sub-grader's reward)."""
    own = names.result_columns
    train = {k: v for k, v in own.items() if not k.startswith("valid_")}
    valid = {k: v for k, v in own.items() if k.startswith("valid_")}
    matched = {
        column.format(match[1]): name
        for column, pattern in names.result_patterns.items()
        for name in sorted(logged)
        if (match := re.match(pattern, name))
    }
    return {
        "train_loss": "loss",
        **train,
        "learning_rate": "learning_rate",
        "valid_loss": "eval_loss",
        **valid,
        **matched,
    }


def _results_csv(job_events: list[JobEvent], names: MetricNames) -> str:
    """One row per logged step (the last run's, for a resumed job), evaluations on the step they ran at."""
    rows: dict[int, dict[str, float]] = {}
    for event in job_events:
        if isinstance(event, Metrics | Evaluation) and "train_runtime" not in event.metrics:
            rows.setdefault(event.step, {}).update(event.metrics)
    logged = {key for metrics in rows.values() for key in metrics}
    columns = _result_columns(names, logged)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", *columns])
    for step in sorted(rows):
        metrics = rows[step]
        writer.writerow([step, *(metrics.get(name, "") for name in columns.values())])
    return out.getvalue()
