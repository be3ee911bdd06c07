"""Engine: the job system as every front door calls it. A front door translates its API's requests and answers;
everything else happens here.

``create`` admits a request (engine/admission.py), writes the job's directory (its rows and job.json) and submits
it to the JobManager; ``get``, ``visible``, ``cancel``, ``pause`` and ``resume`` apply the access rule
(engine/job_access.py) with the front door's framework deciding; ``events`` and ``final_model`` read a job's files,
so no front door spells its directory's layout.

A job whose directory the server cannot write is still recorded, as failed saying why: the server's storage, not
the request, is at fault. A refusal is a RequestError (409 for a name already taken, 507 when the job store cannot
record the job), like admission's.
"""

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.checkpoints import final_model_dir
from llama_stack_provider_trl.common.events import Failed, JobEvent
from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE
from llama_stack_provider_trl.common.storage_errors import describe_write_error
from llama_stack_provider_trl.config import WARM_STANDBY_MIN_CPUS, TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import AdmittedJob, RequestSources, admit, check_user_share
from llama_stack_provider_trl.engine.cpu_threads import usable_cores
from llama_stack_provider_trl.engine.curves import CurvesPainter
from llama_stack_provider_trl.engine.devices import resolve_device
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.event_history import EventHistory
from llama_stack_provider_trl.engine.job_access import JobAccess, unfinished_jobs
from llama_stack_provider_trl.engine.job_record import FINAL_STATES, JobOwner, JobRecord
from llama_stack_provider_trl.engine.job_request import JobRequest
from llama_stack_provider_trl.engine.job_store import JobStore, StoreInUse
from llama_stack_provider_trl.engine.jobs import JobAlreadyExists, JobManager, JobNotFound
from llama_stack_provider_trl.engine.shared_server import shows_server_paths, without_server_paths

logger = logging.getLogger(__name__)

# Called with the admitted job once its directory is written, before it is submitted (nothing may wait there):
# what the front door keeps beside the job; a problem storing it, as a message, fails the job saying so.
BeforeSubmit = Callable[[AdmittedJob], str | None]


class Engine:
    def __init__(self, config: TrlPostTrainingConfig, access: JobAccess, auth: bool = False) -> None:
        """``auth``: whether the server authenticates its callers (each door reads its run config's server.auth)."""
        self.config = config
        self.access = access
        self.show_paths = shows_server_paths(config, auth)  # callers read the server's paths, in status and errors
        self.output_root = Path(config.output_dir).expanduser().resolve()
        self.jobs = _job_manager(config)
        self.device = "cpu"
        self._history = EventHistory()  # each job's events.jsonl parsed once: a later read takes the new lines

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching jobs on the device they train on, with the output directory and the standby process."""
        try:
            self.output_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # serve status and history anyway; each new job fails saying why
            logger.error("TRL training: %s", describe_write_error(self.output_root, exc))
        config = self.config
        local = config.executor == "local"
        # On a Ray cluster the workers hold the devices: the server has none to look for (config.py checks it)
        self.device = resolve_device(config.device) if local else config.device
        standby = config.warm_standby if local else False
        if standby == "auto":
            standby = usable_cores() >= WARM_STANDBY_MIN_CPUS
        self.jobs.start(standby_device=self.device if standby else None)
        logger.info("TRL training: device %s, jobs under %s", self.device, self.output_root)

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.jobs.shutdown)

    # -- create -----------------------------------------------------------------------------------------------------
    async def create(
        self, request: JobRequest, sources: RequestSources, before_submit: BeforeSubmit | None = None
    ) -> AdmittedJob:
        """Admit the request for the authenticated caller, write the job and queue it (or record it as failed when
        its directory cannot be written)."""
        owner = self.access.caller()
        self.access.require("create", request.job_uuid.value, owner)
        job = await admit(
            request,
            self.config,
            output_root=self.output_root,
            device=self.device,
            job_exists=self.jobs.exists,
            sources=sources,
            caller=self.access.admission_caller(self.jobs, owner),
            checkpoint_path=self.jobs.checkpoint_path,
            unfinished=lambda: [r.spec for r in self.jobs.list() if r.status not in FINAL_STATES],
        )
        # Nothing from here on waits: no other request is admitted between the caller's queue count and the submit.
        problem = _write_job(job, request.job_uuid.field)
        if before_submit is not None:
            problem = before_submit(job) if problem is None else problem
        self._submit(job, problem, request.job_uuid.field, owner)
        return job

    def _submit(self, job: AdmittedJob, problem: str | None, job_uuid_field: str, owner: JobOwner | None) -> None:
        try:
            if problem is None:
                self.jobs.submit(job.spec, owner)
            else:
                self.jobs.submit_failed(job.spec, problem, owner)
        except JobAlreadyExists as exc:
            raise RequestError(
                job_uuid_field, f"a job named '{job.spec.job_uuid}' already exists", HTTPStatus.CONFLICT
            ) from exc
        except (sqlite3.Error, OSError) as exc:
            raise RequestError(
                "job_store_path", f"the job store cannot record the job: {exc}", HTTPStatus.INSUFFICIENT_STORAGE
            ) from exc

    # -- read -------------------------------------------------------------------------------------------------------
    def get(self, job_uuid: str) -> JobRecord:
        """The job, if the caller may see it; a job it may not see raises JobNotFound, as one that does not exist."""
        record = self.jobs.get(job_uuid)
        if not self.access.may_read(record):
            raise JobNotFound(job_uuid)
        return self._as_shown(record)

    def visible(self) -> list[JobRecord]:
        """The jobs the caller may see, in submission order."""
        return [self._as_shown(record) for record in self.access.visible(self.jobs.list())]

    def _as_shown(self, record: JobRecord) -> JobRecord:
        """The record as a caller reads it: where the server hides its paths, its error names them by what they are
        (the job's directory, the Python installation...)."""
        if self.show_paths or record.error is None:
            return record
        return record.model_copy(update={"error": without_server_paths(record.error, record.spec.path)})

    def record(self, job_uuid: str) -> JobRecord:
        """The job, whoever asks (JobNotFound when there is none): for a caller checked another way, as serving
        checks it against OGX's models table."""
        return self.jobs.get(job_uuid)

    def records(self) -> list[JobRecord]:
        """Every job, whoever asks, in submission order: for a front door loading its own state at start."""
        return self.jobs.list()

    def events(self, record: JobRecord) -> list[JobEvent]:
        """What the job's training process reported, oldest first (a failure's error as ``get`` shows the job's)."""
        events = self._history.events(record.spec.path)
        if self.show_paths:
            return events
        return [
            event.model_copy(update={"error": without_server_paths(event.error, record.spec.path)})
            if isinstance(event, Failed)
            else event
            for event in events
        ]

    def final_model(self, record: JobRecord) -> Path:
        """The full model a completed job trained (with an adapter merged, the merged one)."""
        return final_model_dir(record.spec.path)

    # -- change -----------------------------------------------------------------------------------------------------
    def cancel(self, job_uuid: str) -> None:
        """Raises JobNotFound for a job the caller may not see, the framework's 403 for one it may only read, and
        JobAlreadyFinished."""
        self._may_change(job_uuid)
        _recorded(self.jobs.cancel, job_uuid)

    def pause(self, job_uuid: str) -> None:
        """As ``cancel``; WrongJobState unless the job is queued or running."""
        self._may_change(job_uuid)
        _recorded(self.jobs.pause, job_uuid)

    def resume(self, job_uuid: str) -> None:
        """As ``cancel``; WrongJobState unless the job is paused; the 429 of max_queued_jobs_per_user when its owner
        has that many other unfinished jobs (the limit may have been lowered since it was paused)."""
        record = self._may_change(job_uuid)
        if record.status == "paused":
            others = unfinished_jobs(self.jobs, record.owner, besides=job_uuid)
            check_user_share(others, self.config.max_queued_jobs_per_user)
        _recorded(self.jobs.resume, job_uuid)

    def _may_change(self, job_uuid: str) -> JobRecord:
        record = self.get(job_uuid)
        self.access.require("update", job_uuid, record.owner)  # may see it, may not change it: 403
        return record


def _recorded(change: Callable[[str], None], job_uuid: str) -> None:
    """A change of a job's state, refused (507) when the job store cannot record it: the job then stays as it was."""
    try:
        change(job_uuid)
    except (sqlite3.Error, OSError) as exc:
        raise RequestError(
            "job_store_path", f"the job store cannot record the change: {exc}", HTTPStatus.INSUFFICIENT_STORAGE
        ) from exc


def _job_manager(config: TrlPostTrainingConfig) -> JobManager:
    try:
        store = JobStore(config.job_store_path, exclusive=True)
    except StoreInUse as exc:  # a second server on the same state would take over the first one's jobs
        raise RuntimeError(f"job_store_path: {exc}") from None
    except (sqlite3.Error, OSError) as exc:  # no durable records, no jobs: refuse to start, saying why
        raise RuntimeError(f"job_store_path: cannot open the job store {config.job_store_path}: {exc}") from exc
    return JobManager(
        config.max_concurrent_jobs,
        config.cancel_grace_period_s,
        store=store,
        resume_interrupted_jobs=config.resume_interrupted_jobs,
        curves=CurvesPainter(),
        job_environment=config.job_environment,
        hub_models=config.hub_models,
        max_running_per_user=config.max_running_jobs_per_user,
        unowned_jobs_owner=JobOwner(principal=config.unowned_jobs_owner) if config.unowned_jobs_owner else None,
    )


def _write_job(job: AdmittedJob, job_uuid_field: str) -> str | None:
    """Claim the job's directory and write what its process reads; the storage problem, if any, as a message."""
    job_dir = job.spec.path
    try:
        job_dir.mkdir()  # atomic claim of the name: a concurrent request with the same job_uuid gets 409
    except FileExistsError as exc:
        raise RequestError(
            job_uuid_field,
            f"a job named '{job.spec.job_uuid}' already exists; choose another {job_uuid_field}",  # no server path
            HTTPStatus.CONFLICT,
        ) from exc
    except OSError as exc:
        return f"the job's directory: {describe_write_error(job_dir, exc)}"
    try:
        _write_jsonl(job_dir / TRAIN_DATA_FILE, job.train_rows)
        if job.eval_rows is not None:
            _write_jsonl(job_dir / EVAL_DATA_FILE, job.eval_rows)
        job.spec.write()
    except OSError as exc:
        return f"the job's data: {describe_write_error(exc.filename or job_dir, exc)}"
    return None


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
