"""TrlFineTuningImpl: OpenAI's fine-tuning API (api.py) over the engine, reading training data from OGX's Files API.

A job is admitted by the engine (engine/admission.py) from a JobRequest whose fields carry OpenAI's names, so each
refusal names the parameter the caller sent. What OpenAI's job object holds beyond the engine's record (the request
as the caller gave it, the resolved hyperparameters, the result file) is kept in ``openai_job.json`` in the job's
directory, so a restarted server serves the same objects. Each job belongs to the authenticated user who created it
(the engine's record keeps the owner); OGX's access policy decides who else may see and change it (ogx/access.py).
"""

import asyncio
import contextlib
import io
import logging
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

from llama_stack_provider_trl.algorithms import ALGORITHMS
from llama_stack_provider_trl.algorithms.dpo import DPORequest
from llama_stack_provider_trl.algorithms.sft import SFTRequest
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import AdmittedJob
from llama_stack_provider_trl.engine.disk_space import format_bytes
from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_record import FINAL_STATES, JobRecord
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, MethodRequest
from llama_stack_provider_trl.engine.jobs import JobAlreadyFinished, JobNotFound, WrongJobState
from llama_stack_provider_trl.engine.shared_server import server_has_auth, warn_if_open
from llama_stack_provider_trl.ogx.access import acting_as, job_access
from llama_stack_provider_trl.ogx.api import (
    CreateFineTuningJobRequest,
    DpoHyperparameters,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobEventList,
    FineTuningJobList,
    Hyperparameters,
    JobError,
    OpenAIError,
    ReinforcementHyperparameters,
)
from llama_stack_provider_trl.ogx.fine_tuned_models import FineTunedModels
from llama_stack_provider_trl.ogx.job_objects import (
    OPENAI_JOB_FILE,
    STATUS,
    OpenAIJob,
    checkpoint_name,
    checkpoint_object,
    error_message,
    openai_events,
    page_of,
    results_csv,
    trained_tokens,
)
from llama_stack_provider_trl.ogx.openai_requests import (
    AUTO_BATCH_SIZE,
    AUTO_N_EPOCHS,
    check_options,
    fine_tuned_name,
    given_or,
    grader_of,
    lr_multiplier,
    method_of,
    number_or_auto,
    overrides_of,
    reinforcement_request,
    resolved_method,
    trackers_of,
)
from llama_stack_provider_trl.ogx.training_files import preference_rows, reinforcement_rows, supervised_rows

logger = logging.getLogger(__name__)

ORGANIZATION_ID = "local"
CONFIG_VARIABLE = "OGX_CONFIG"  # the run config's path, which `ogx run` exports to its server (server.auth)
RESULTS_FILENAME = "step_metrics.csv"
# The reader of each OpenAI method's training files
ROW_READERS = {"supervised": supervised_rows, "dpo": preference_rows, "reinforcement": reinforcement_rows}


class TrlFineTuningImpl:
    def __init__(
        self, config: TrlPostTrainingConfig, files: Files, policy: list[AccessRule] | None = None, models: Any = None
    ) -> None:
        self.config = config
        self.files = files
        self._auth = server_has_auth(CONFIG_VARIABLE)
        self.engine = Engine(config, job_access(policy or []), self._auth)
        self._openai: dict[str, OpenAIJob] = {}
        self._results_lock = asyncio.Lock()
        # with OGX's models table (an inference API in ogx-run.yaml), succeeded jobs' models are served
        self.fine_tuned_models = None if models is None else FineTunedModels(models, self.engine, self._openai)

    async def initialize(self) -> None:
        warn_if_open(self.config, self._auth)
        self.engine.start()
        for record in self.engine.records():
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
        method, hyperparameters, named = method_of(request)
        grader = grader_of(request.method)
        check_options(request)
        job_id = f"ftjob-{secrets.token_hex(12)}"
        batch_size = given_or(hyperparameters.batch_size, AUTO_BATCH_SIZE)
        n_epochs = given_or(hyperparameters.n_epochs, AUTO_N_EPOCHS)
        multiplier = lr_multiplier(hyperparameters.learning_rate_multiplier, f"{named}.learning_rate_multiplier")
        reinforcement = hyperparameters if isinstance(hyperparameters, ReinforcementHyperparameters) else None
        algorithm: MethodRequest
        if isinstance(hyperparameters, DpoHyperparameters):
            algorithm = DPORequest(beta=number_or_auto(hyperparameters.beta, f"{named}.beta"))
        elif reinforcement is not None:
            algorithm = reinforcement_request(reinforcement, grader, named)
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
            overrides=Given(overrides_of(request), "trl"),
            trackers=trackers_of(request.integrations),
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
                method=resolved_method(method, resolved, job.spec, reinforcement, grader),
                hyperparameters=resolved,
                seed=job.spec.seed,
                suffix=request.suffix,
                metadata=request.metadata,
                fine_tuned_model=fine_tuned_name(request.model, request.suffix, job_id),
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
        page, has_more = page_of(newest_first, after, limit, "after", lambda job: job.id)
        return FineTuningJobList(data=[await self._job_object(job.id) for job in page], has_more=has_more)

    async def list_fine_tuning_events(self, job_id: str, after: str | None, limit: int) -> FineTuningJobEventList:
        record, openai_job = self._get(job_id)
        events = openai_events(record, openai_job, self.engine.events(record))[::-1]  # newest first, as OpenAI
        page, has_more = page_of(events, after, limit, "after", lambda event: event.id)
        return FineTuningJobEventList(data=page, has_more=has_more)

    async def list_fine_tuning_checkpoints(
        self, job_id: str, after: str | None, limit: int
    ) -> FineTuningJobCheckpointList:
        record, openai_job = self._get(job_id)
        checkpoints = [  # newest first: the record holds them in the order they were saved
            checkpoint_object(record, openai_job, c) for c in reversed(record.checkpoints) if Path(c.path).exists()
        ]
        page, has_more = page_of(checkpoints, after, limit, "after", lambda checkpoint: checkpoint.id)
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
            error=JobError(code="training_failed", message=error_message(record.error)) if status == "failed" else None,
            fine_tuned_model=openai_job.fine_tuned_model if status == "succeeded" else None,
            finished_at=int(record.completed_at.timestamp()) if finished and record.completed_at else None,
            hyperparameters=openai_job.hyperparameters,
            model=openai_job.model,
            organization_id=ORGANIZATION_ID,
            result_files=openai_job.result_files,
            seed=openai_job.seed,
            status=status,
            trained_tokens=trained_tokens(record) if status == "succeeded" else None,
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
            results = results_csv(self.engine.events(record), names).encode()
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
                    if checkpoint_name(openai_job, checkpoint.step, checkpoint.identifier) == name:
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
