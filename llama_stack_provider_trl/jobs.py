"""Training jobs as OS processes: queue, launch, watch, cancel.

One provider-owned thread does all the work, so no job depends on the event loop of the request
that created it (the library client runs each request on a loop it drains before returning).
Each job is a process group of its own, started with ``python -m <recipe> <job_dir>``; the thread
reads the events the recipe appends and decides the job's final state from them and the exit code.
"""

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llama_stack_provider_trl.events import EventReader
from llama_stack_provider_trl.job_spec import EVENTS_FILE, LOG_FILE, DPOJobSpec

logger = logging.getLogger(__name__)

JobState = Literal["scheduled", "in_progress", "completed", "failed", "cancelled"]
# What an in_progress job is doing, from the recipe's events.
Phase = Literal["queued", "starting", "loading", "training", "saving", "finished"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
RECIPE_MODULE = "llama_stack_provider_trl.recipes.dpo_training_single_device"
LOG_TAIL_LINES = 15


class JobNotFound(KeyError):
    pass


class JobAlreadyExists(Exception):
    pass


class JobAlreadyFinished(Exception):
    def __init__(self, job_uuid: str, status: str) -> None:
        super().__init__(f"job '{job_uuid}' already finished with status '{status}'; there is nothing to cancel")


class CheckpointRecord(BaseModel):
    identifier: str
    created_at: datetime
    epoch: int
    step: int
    path: str
    train_loss: float | None = Field(default=None, description="Mean training loss over the epoch that ended here.")
    eval_loss: float | None = Field(default=None, description="Validation loss at this checkpoint, if there is a set.")
    perplexity: float | None = Field(default=None, description="Perplexity of the validation set's chosen answers.")


class JobRecord(BaseModel):
    """Everything the API reports about a job. Plain data: it can be copied, stored and served."""

    spec: DPOJobSpec
    status: JobState = "scheduled"
    scheduled_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    completed_at: datetime | None = None
    pid: int | None = None
    phase: Phase = "queued"
    setup: dict[str, Any] = Field(default_factory=dict, description="What the recipe resolved: precision, steps...")
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    eval_metrics: dict[str, float] = Field(default_factory=dict, description="The latest evaluation's metrics.")
    tokens_per_s: float | None = None
    mfu: float | None = None
    padding_share: float | None = None
    peak_memory_gib: float | None = None
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    error: str | None = None

    @property
    def job_uuid(self) -> str:
        return self.spec.job_uuid

    @property
    def log_path(self) -> Path:
        return self.spec.path / LOG_FILE


class _Running:
    """Runtime handles of a launched job, kept apart from its record."""

    def __init__(self, process: subprocess.Popen[bytes], events: EventReader) -> None:
        self.process = process
        self.events = events
        self.sigterm_at: float | None = None
        self.sigkill_sent = False
        self.reported: str | None = None  # "completed" / "failed" as the recipe itself reported
        self.reported_error: str | None = None


class JobManager:
    def __init__(self, max_concurrent_jobs: int, cancel_grace_period_s: float, poll_interval_s: float = 0.2) -> None:
        self._max_concurrent = max_concurrent_jobs
        self._grace_s = cancel_grace_period_s
        self._poll_s = poll_interval_s
        self._jobs: dict[str, JobRecord] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._running: dict[str, _Running] = {}
        self._cancel_requested: set[str] = set()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._watch, name="trl-job-manager", daemon=True)

    # -- API used by the provider -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, spec: DPOJobSpec) -> JobRecord:
        with self._lock:
            if spec.job_uuid in self._jobs:
                raise JobAlreadyExists(spec.job_uuid)
            record = JobRecord(spec=spec)
            self._jobs[spec.job_uuid] = record
            self._queue.append(spec.job_uuid)
            self._lock.notify_all()
            return record.model_copy(deep=True)

    def exists(self, job_uuid: str) -> bool:
        with self._lock:
            return job_uuid in self._jobs

    def get(self, job_uuid: str) -> JobRecord:
        with self._lock:
            if job_uuid not in self._jobs:
                raise JobNotFound(job_uuid)
            if job_uuid in self._running:
                self._consume_events(job_uuid)
            return self._jobs[job_uuid].model_copy(deep=True)

    def list(self) -> list[JobRecord]:
        with self._lock:
            return [record.model_copy(deep=True) for record in self._jobs.values()]

    def cancel(self, job_uuid: str) -> None:
        with self._lock:
            record = self._jobs.get(job_uuid)
            if record is None:
                raise JobNotFound(job_uuid)
            if record.status in FINAL_STATES:
                raise JobAlreadyFinished(job_uuid, record.status)
            if record.status == "scheduled":
                self._queue.remove(job_uuid)
                self._finish(record, "cancelled")
                return
            self._cancel_requested.add(job_uuid)
            self._signal(job_uuid, signal.SIGTERM)
            self._lock.notify_all()

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Cancel every job that has not finished and stop the watcher thread."""
        with self._lock:
            self._stopping = True
            for job_uuid in list(self._queue):
                self._finish(self._jobs[job_uuid], "cancelled")
            self._queue.clear()
            for job_uuid in self._running:
                self._cancel_requested.add(job_uuid)
                self._signal(job_uuid, signal.SIGTERM)
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s if timeout_s is not None else self._grace_s + 5)

    # -- the watcher thread -------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with self._lock:
                try:
                    self._tick()
                except Exception:  # a bug here must not stop every other job from being watched
                    logger.exception("job watcher tick failed")
                if self._stopping and not self._running:
                    return
                self._lock.wait(timeout=self._poll_s)

    def _tick(self) -> None:
        for job_uuid in list(self._running):
            self._consume_events(job_uuid)
            running = self._running[job_uuid]
            if running.process.poll() is not None:
                self._on_exit(job_uuid)
            elif self._grace_expired(running):
                self._signal(job_uuid, signal.SIGKILL)
        while self._queue and len(self._running) < self._max_concurrent and not self._stopping:
            self._launch(self._jobs[self._queue.popleft()])

    def _launch(self, record: JobRecord) -> None:
        spec = record.spec
        try:
            log = record.log_path.open("ab")
        except OSError as exc:
            self._finish(record, "failed", error=f"cannot open the job log {record.log_path}: {exc}")
            return
        with log:
            try:
                env = _child_environment(spec.device)
                process = subprocess.Popen(
                    [sys.executable, "-m", RECIPE_MODULE, str(spec.path)],
                    cwd=spec.path,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: cancel signals reach every child it starts
                )
            except (OSError, ValueError, IndexError) as exc:
                self._finish(record, "failed", error=f"could not start the training process: {exc}")
                return
        self._running[record.job_uuid] = _Running(process, EventReader(spec.path / EVENTS_FILE))
        record.status = "in_progress"
        record.phase = "starting"
        record.started_at = datetime.now(UTC)
        record.pid = process.pid
        logger.info("job %s started as pid %d", record.job_uuid, process.pid)

    def _consume_events(self, job_uuid: str) -> None:
        record, running = self._jobs[job_uuid], self._running[job_uuid]
        for event in running.events.read_new():
            kind = event.get("event")
            if kind == "started":
                record.phase = "loading"
            elif kind == "setup_done":
                record.phase = "training"
                record.setup = {k: v for k, v in event.items() if k not in ("event", "time")}
                record.total_steps = event["total_steps"]
            elif kind == "training_started":
                record.setup["optimizer"] = event["optimizer"]
            elif kind == "metrics":
                record.step = event["step"]
                record.total_steps = event["total_steps"]
                record.epoch = event["epoch"]
                record.metrics = event["metrics"]
                record.tokens_per_s = event.get("tokens_per_s")
                record.mfu = event.get("mfu")
                record.padding_share = event.get("padding_share")
            elif kind == "peak_memory":
                record.peak_memory_gib = event["gib"]
            elif kind == "train_summary":
                record.phase = "saving"
            elif kind == "eval":
                record.eval_metrics = event["metrics"]
            elif kind == "checkpoint":
                record.checkpoints.append(
                    CheckpointRecord(
                        created_at=datetime.fromtimestamp(event["time"], UTC),
                        **{k: v for k, v in event.items() if k in CheckpointRecord.model_fields},
                    )
                )
            elif kind == "checkpoints_removed":  # save_total_limit deleted older epoch checkpoints
                gone = set(event["identifiers"])
                record.checkpoints = [c for c in record.checkpoints if c.identifier not in gone]
            elif kind in ("completed", "failed"):
                running.reported = kind
                running.reported_error = event.get("error")

    def _on_exit(self, job_uuid: str) -> None:
        self._consume_events(job_uuid)  # the last events may have landed after the previous read
        record = self._jobs[job_uuid]
        running = self._running.pop(job_uuid)
        code = running.process.returncode
        if job_uuid in self._cancel_requested:
            self._cancel_requested.discard(job_uuid)
            self._finish(record, "cancelled")
        elif code == 0 and running.reported == "completed":
            self._finish(record, "completed")
        else:
            reason = running.reported_error or _describe_exit(code)
            self._finish(record, "failed", error=f"{reason}\n--- last lines of {record.log_path} ---\n{_tail(record)}")
        self._lock.notify_all()

    def _grace_expired(self, running: _Running) -> bool:
        return (
            running.sigterm_at is not None
            and not running.sigkill_sent
            and time.monotonic() - running.sigterm_at >= self._grace_s
        )

    def _signal(self, job_uuid: str, sig: signal.Signals) -> None:
        running = self._running.get(job_uuid)
        if running is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
            os.killpg(running.process.pid, sig)
        if sig == signal.SIGTERM and running.sigterm_at is None:
            running.sigterm_at = time.monotonic()
        elif sig == signal.SIGKILL:
            running.sigkill_sent = True

    @staticmethod
    def _finish(record: JobRecord, status: JobState, error: str | None = None) -> None:
        record.status = status
        record.phase = "finished"
        record.completed_at = datetime.now(UTC)
        record.error = error
        logger.info("job %s %s%s", record.job_uuid, status, f": {error.splitlines()[0]}" if error else "")


def _child_environment(device: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if device.startswith("cuda:"):  # the recipe always trains on "cuda", the one device it can see
        index = int(device.split(":", 1)[1])
        visible = env.get("CUDA_VISIBLE_DEVICES")
        env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    return env


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"training process killed by signal {signal.Signals(-code).name}"
    return f"training process exited with code {code} without reporting an error"


def _tail(record: JobRecord) -> str:
    try:
        lines = record.log_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(lines[-LOG_TAIL_LINES:])
