"""Training jobs as OS processes: queue, launch, watch, cancel, pause and resume.

One provider-owned thread does all the work, so no job depends on the event loop of the request
that created it (the library client runs each request on a loop it drains before returning).
Each job is a process group of its own, started with ``python -m <recipe> <job_dir>``, or handed to the
standby recipe process the thread keeps ready with its imports done (common/recipe_process.py); the
thread reads the events the recipe appends and decides the job's final state from them and the exit code.

Every change to a record is written through to a JobStore, so a restarted server finds the same
history: finished jobs as they ended, scheduled jobs queued again in submission order, and jobs the
previous server was running either resumed from their last Trainer checkpoint or failed with the reason.
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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.algorithms import ALGORITHMS, JobSpec
from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
from llama_stack_provider_trl.common.events import Completed, EpochEnd, Evaluation, EventReader, Failed, Metrics, Paused
from llama_stack_provider_trl.common.job_spec import EVENTS_FILE, PAUSE_REQUEST_FILE
from llama_stack_provider_trl.common.parent_watch import PARENT_PID_ENV
from llama_stack_provider_trl.common.recipe_process import RESUME_FLAG, STANDBY_FLAG, handoff_line
from llama_stack_provider_trl.common.storage_errors import describe_write_error
from llama_stack_provider_trl.engine.cpu_threads import thread_environment
from llama_stack_provider_trl.engine.curves import CurvesPainter
from llama_stack_provider_trl.engine.disk_space import explain_full_disk
from llama_stack_provider_trl.engine.job_environment import job_environment
from llama_stack_provider_trl.engine.job_record import (
    FINAL_STATES,
    JobOwner,
    JobRecord,
    JobState,
    apply_event,
    same_user,
)
from llama_stack_provider_trl.engine.job_store import JobStore
from llama_stack_provider_trl.engine.launch import launch_command
from llama_stack_provider_trl.engine.log_tail import tail_lines

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 15
MAX_ATTEMPTS = 3  # launches of one job (first run + resumes) before an interrupted job is failed instead
PROGRESS_WRITE_INTERVAL_S = 1.0  # metric-only updates are written at most this often; state changes always
SHUTDOWN_GRACE_S = 3.0  # Llama Stack gives each provider's shutdown() 5 s in all
CURVES_REDRAW_S = 300.0  # a long epoch's picture is redrawn this often besides at epoch ends and the end


class JobNotFound(KeyError):
    pass


class JobAlreadyExists(Exception):
    pass


class JobAlreadyFinished(Exception):
    def __init__(self, job_uuid: str, status: str) -> None:
        super().__init__(f"job '{job_uuid}' already finished with status '{status}'; there is nothing to cancel")


class WrongJobState(Exception):
    """Pause or resume of a job in a state that does not allow it (``status`` is the job's)."""

    def __init__(self, job_uuid: str, status: str, action: str) -> None:
        super().__init__(f"job '{job_uuid}' is {status}; it cannot be {action}")
        self.status = status


class _Running:
    """Runtime handles of a launched job, kept apart from its record."""

    def __init__(self, process: subprocess.Popen[bytes], events: EventReader, from_standby: bool) -> None:
        self.process = process
        self.events = events
        self.from_standby = from_standby
        self.sigterm_at: float | None = None
        self.sigkill_sent = False
        self.reported: Completed | Failed | Paused | None = None  # the outcome the recipe itself reported
        self.persisted_at = 0.0
        self.curves_drawn_at = time.monotonic()


class _Standby:
    """A recipe process waiting on its stdin for a job, started for one device."""

    def __init__(self, process: subprocess.Popen[bytes], device: str, module: str) -> None:
        self.process = process
        self.device = device
        self.module = module


class JobManager:
    def __init__(
        self,
        max_concurrent_jobs: int,
        cancel_grace_period_s: float,
        store: JobStore | None = None,
        resume_interrupted_jobs: bool = True,
        recipe_module: str | None = None,
        poll_interval_s: float = 0.2,
        curves: CurvesPainter | None = None,
        job_environment: Sequence[str] = (),
        max_running_per_user: int | None = None,
        unowned_jobs_owner: JobOwner | None = None,
        hub_models: bool = True,
    ) -> None:
        """``max_running_per_user``: jobs of one user training at once (None: any); a user's later jobs wait queued.
        ``unowned_jobs_owner``: given at start to every stored job without an owner (recorded before authentication)."""
        self._max_concurrent = max_concurrent_jobs
        self._job_environment = tuple(job_environment)  # the server's variables the operator passes to jobs
        self._hub_models = hub_models  # false: jobs run with the Hugging Face libraries offline
        self._max_per_user = max_running_per_user
        self._unowned_owner = unowned_jobs_owner
        self._grace_s = cancel_grace_period_s
        self._store = store
        self._resume = resume_interrupted_jobs
        self._recipe_module = recipe_module  # None: each algorithm's own (algorithms/)
        self._standby_module = self._module_for("dpo")  # the next standby imports the last launched job's recipe
        self._poll_s = poll_interval_s
        self._curves = curves
        self._jobs: dict[str, JobRecord] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._running: dict[str, _Running] = {}
        self._cancel_requested: set[str] = set()
        self._lock = threading.Condition()
        self._stopping = False
        self._standby_device: str | None = None  # None: every job starts a fresh process
        self._standby: _Standby | None = None
        # This thread forks every training process and outlives them all: their parent-death signal is tied
        # to it (PR_SET_PDEATHSIG fires when the forking thread exits, not the process).
        self._thread = threading.Thread(target=self._watch, name="trl-job-manager", daemon=True)

    # -- API used by the provider -------------------------------------------------------------
    def start(self, standby_device: str | None = None) -> None:
        """Load the store and start watching. With ``standby_device``, keep a recipe process for that device
        started ahead, so the next job skips the imports."""
        with self._lock:
            self._standby_device = standby_device
            self._recover()
        self._thread.start()

    def submit(self, spec: JobSpec, owner: JobOwner | None = None) -> JobRecord:
        with self._lock:
            if spec.job_uuid in self._jobs:
                raise JobAlreadyExists(spec.job_uuid)
            record = JobRecord(spec=spec, owner=owner)
            self._persist(record)  # raises if the store cannot take it: the job is not accepted
            self._jobs[spec.job_uuid] = record
            self._queue.append(spec.job_uuid)
            self._lock.notify_all()
            return record.model_copy(deep=True)

    def submit_failed(self, spec: JobSpec, error: str, owner: JobOwner | None = None) -> JobRecord:
        """Record a job that could not even be set up (its directory cannot be written)."""
        with self._lock:
            if spec.job_uuid in self._jobs:
                raise JobAlreadyExists(spec.job_uuid)
            record = JobRecord(spec=spec, owner=owner)
            self._jobs[spec.job_uuid] = record
            self._finish(record, "failed", error=error)
            return record.model_copy(deep=True)

    def checkpoint_path(self, identifier: str) -> str | None:
        """The directory of the checkpoint the artifacts list under ``identifier`` (any job's), or None."""
        with self._lock:
            for record in self._jobs.values():
                for checkpoint in record.checkpoints:
                    if checkpoint.identifier == identifier:
                        return checkpoint.path
        return None

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
            if record.status in ("scheduled", "paused"):
                # raises if the store cannot take it: the job stays as recorded
                self._persist(record.model_copy(update={"status": "cancelled", "phase": "finished"}))
                if record.status == "scheduled":
                    self._queue.remove(job_uuid)
                self._finish(record, "cancelled")
                return
            self._cancel_requested.add(job_uuid)
            self._signal(job_uuid, signal.SIGTERM)
            self._lock.notify_all()

    def pause(self, job_uuid: str) -> None:
        """A queued job leaves the queue; a running one is asked to save a checkpoint after its current step and
        exit (a file in its directory: no signal can reach it before its handler exists). It is paused once it has."""
        with self._lock:
            record = self._require(job_uuid)
            if record.status == "scheduled":
                paused = record.model_copy(update={"status": "paused"})
                self._persist(paused)  # raises if the store cannot take it: the job stays queued, as recorded
                self._queue.remove(job_uuid)
                self._jobs[job_uuid] = paused
            elif record.status == "in_progress":
                (record.spec.path / PAUSE_REQUEST_FILE).touch()
            else:
                raise WrongJobState(job_uuid, record.status, "paused")

    def resume(self, job_uuid: str) -> None:
        """Queue a paused job again; it continues from its last Trainer checkpoint."""
        with self._lock:
            record = self._require(job_uuid)
            if record.status != "paused":
                raise WrongJobState(job_uuid, record.status, "resumed")
            queued = record.model_copy(update={"status": "scheduled", "phase": "queued"})
            self._persist(queued)  # raises if the store cannot take it: the job stays paused, as recorded
            (record.spec.path / PAUSE_REQUEST_FILE).unlink(missing_ok=True)
            self._jobs[job_uuid] = queued
            self._queue.append(job_uuid)
            self._lock.notify_all()

    def _require(self, job_uuid: str) -> JobRecord:
        record = self._jobs.get(job_uuid)
        if record is None:
            raise JobNotFound(job_uuid)
        return record

    def shutdown(self, timeout_s: float = SHUTDOWN_GRACE_S + 1) -> None:
        """Stop every running job (SIGTERM, then SIGKILL after a short grace) and record how it ended.

        Scheduled jobs stay scheduled in the store and run after a restart. A running job interrupted here
        (not cancelled by a user) is recorded as resumable when resume_interrupted_jobs is on, else cancelled.
        """
        with self._lock:
            self._stopping = True
            for job_uuid in self._running:
                self._signal(job_uuid, signal.SIGTERM)
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        with self._lock:  # the standby, and whatever outlived the grace period (or a watcher that never started)
            self._stop_standby()
            for job_uuid in list(self._running):
                self._signal(job_uuid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._running[job_uuid].process.wait(timeout=1)
                self._on_exit(job_uuid)
        if self._curves is not None:
            self._curves.close()
        if self._store is not None:
            self._store.close()

    # -- restart --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Load the store: finished jobs as they are, scheduled ones requeued in order, interrupted ones decided."""
        if self._store is None:
            return
        for raw in self._store.load_all():
            try:
                record = JobRecord.model_validate_json(raw)
            except ValueError:
                logger.exception("skipping a job record that no longer parses")
                continue
            if record.owner is None and self._unowned_owner is not None:
                record.owner = self._unowned_owner
                self._persist(record)
                logger.info("job %s now belongs to %s (unowned_jobs_owner)", record.job_uuid, record.owner.principal)
            self._jobs[record.job_uuid] = record
            if record.status == "in_progress":
                self._recover_interrupted(record)
            if record.status == "scheduled":
                self._queue.append(record.job_uuid)
        if self._jobs:
            logger.info("loaded %d job records, %d queued", len(self._jobs), len(self._queue))

    def _recover_interrupted(self, record: JobRecord) -> None:
        pid = record.pid
        if pid is not None and _is_our_recipe(pid, record.spec.job_dir):  # it survived the server somehow
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        stopped = f"the server stopped while this job was running (pid {pid})"
        checkpoint = last_trainer_checkpoint(record.spec.path)
        if not self._resume:
            self._finish(record, "failed", error=f"{stopped}; resume_interrupted_jobs is off")
        elif checkpoint is None:
            self._finish(record, "failed", error=f"{stopped}; no checkpoint to resume from")
        elif record.attempts >= MAX_ATTEMPTS:
            self._finish(record, "failed", error=f"{stopped}; it was already launched {record.attempts} times")
        else:
            self._requeue(record, f"{stopped}; resuming from {checkpoint}")

    def _requeue(self, record: JobRecord, note: str) -> None:
        record.status = "scheduled"
        record.phase = "queued"
        record.pid = None
        record.resume = True
        record.note = note
        self._persist(record)
        logger.info("job %s requeued: %s", record.job_uuid, note)

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
        for job_uuid in list(self._queue):  # in submission order, past jobs whose user runs enough already
            if len(self._running) >= self._max_concurrent or self._stopping:
                break
            record = self._jobs[job_uuid]
            waiting = self._over_user_share(record)
            if waiting is None:
                self._queue.remove(job_uuid)
                record.waiting = None
                self._launch(record)
            elif record.waiting != waiting:
                record.waiting = waiting
                self._persist(record)
        self._keep_standby()

    def _over_user_share(self, record: JobRecord) -> str | None:
        """Why ``record`` may not start now though a slot is free: its user's running jobs; None: it may."""
        if self._max_per_user is None:
            return None
        running = sum(same_user(self._jobs[job].owner, record.owner) for job in self._running)
        if running < self._max_per_user:
            return None
        who = f"user {record.owner.principal}" if record.owner else "the unauthenticated user"
        jobs = f"{running} job running" if running == 1 else f"{running} jobs running"
        return (
            f"{who} has {jobs}, the most max_running_jobs_per_user lets one user run at once; this job starts "
            "when one of them ends"
        )

    def _module_for(self, algorithm: str) -> str:
        return self._recipe_module or ALGORITHMS[algorithm].recipe_module

    def _launch(self, record: JobRecord) -> None:
        spec = record.spec
        module = self._module_for(spec.algorithm)
        try:
            log = record.log_path.open("ab")
        except OSError as exc:
            self._finish(record, "failed", error=describe_write_error(record.log_path, exc))
            return
        args = [RESUME_FLAG] if record.resume else []
        with log:  # a standby process opens the log itself
            process = self._hand_to_standby(spec, module, args)
            from_standby = process is not None
            if process is None:
                try:
                    process = subprocess.Popen(
                        launch_command(spec, module, args),
                        cwd=spec.path,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._child_environment(spec.device, spec.num_processes, spec.ray_address is not None),
                        start_new_session=True,  # its own process group: cancel signals reach every child it starts
                    )
                except (OSError, ValueError, IndexError) as exc:  # OSError: also the accelerate config
                    self._finish(record, "failed", error=f"could not start the training process: {exc}")
                    return
        events_file = spec.path / EVENTS_FILE
        # A relaunched job appends to the events of its earlier run: go on from the last one this record took in
        # (its run may have written more before the server stopped; re-applying progress events is harmless).
        events = EventReader(events_file, offset=record.events_offset, job=record.job_uuid)
        self._running[record.job_uuid] = _Running(process, events, from_standby)
        self._standby_module = module
        record.status = "in_progress"
        record.phase = "starting"
        record.started_at = record.started_at if record.resume and record.started_at else datetime.now(UTC)
        record.pid = process.pid
        record.warm_start = from_standby
        record.attempts += 1
        self._persist(record)
        logger.info("job %s started as pid %d%s", record.job_uuid, process.pid, " (resuming)" if record.resume else "")

    # -- the standby process -------------------------------------------------------------------
    def _keep_standby(self) -> None:
        standby = self._standby
        if standby is not None and standby.process.poll() is not None:
            self._give_up_standbys(f"the standby training process exited with code {standby.process.returncode}")
        elif standby is not None and standby.module != self._standby_module:  # jobs of another algorithm now
            self._stop_standby()
        if self._standby is None and self._standby_device is not None and not self._stopping:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", self._standby_module, STANDBY_FLAG],
                    stdin=subprocess.PIPE,  # its output goes to the server's until it has a job and a log
                    env=self._child_environment(self._standby_device, processes=1),  # it runs one-process jobs
                    start_new_session=True,
                )
            except OSError as exc:
                self._give_up_standbys(f"a standby training process could not start: {exc}")
                return
            self._standby = _Standby(process, self._standby_device, self._standby_module)

    def _hand_to_standby(self, spec: JobSpec, module: str, args: Sequence[str]) -> subprocess.Popen[bytes] | None:
        """Give the job to the standby process, if there is a live one of its recipe for its device; None: start a
        fresh one."""
        standby = self._standby
        if standby is None or (standby.device, standby.module) != (spec.device, module):
            return None
        if standby.process.poll() is not None:
            return None
        if spec.parallel_strategy or spec.ray_address:  # accelerate launch or Ray starts every rank itself
            return None
        self._standby = None  # used up: the next tick starts another
        try:
            assert standby.process.stdin is not None
            standby.process.stdin.write(handoff_line(spec.path, args))
            standby.process.stdin.close()
        except OSError:
            self._standby = standby
            self._give_up_standbys("the standby training process died before it got a job")
            return None
        return standby.process

    def _child_environment(self, device: str, processes: int, on_ray: bool = False) -> dict[str, Any]:
        """A training process's environment: what it needs of the server's (engine/job_environment.py), with its
        parent's pid, its GPU, and its CPU threads."""
        env = dict(job_environment(os.environ, self._job_environment, self._hub_models), PYTHONUNBUFFERED="1")
        env["TOKENIZERS_PARALLELISM"] = "false"
        env[PARENT_PID_ENV] = str(os.getpid())
        env.update(thread_environment(device, processes, self._max_concurrent, on_ray=on_ray))
        if device.startswith("cuda:"):  # the recipe always trains on "cuda", the one device it can see
            index = int(device.split(":", 1)[1])
            visible = env.get("CUDA_VISIBLE_DEVICES")
            env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
        return env

    def _give_up_standbys(self, reason: str) -> None:
        """A standby that dies before its job would die again (an install that cannot import ends every one the
        same way): from now on each job starts a fresh process, which writes the reason to the job's log."""
        logger.warning("%s; jobs start fresh processes from now on", reason)
        self._standby_device = None
        self._stop_standby()

    def _stop_standby(self) -> None:
        standby, self._standby = self._standby, None
        if standby is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(standby.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            standby.process.wait(timeout=1)

    def _consume_events(self, job_uuid: str) -> None:
        record, running = self._jobs[job_uuid], self._running[job_uuid]
        events = running.events.read_new()
        if not events:
            return
        state_changed = False
        for event in events:
            record = apply_event(record, event)
            if isinstance(event, Completed | Failed | Paused):
                running.reported = event
            state_changed = state_changed or not isinstance(event, Metrics)
        record.events_offset = running.events.offset
        # Trainer deletes the oldest epoch checkpoints under save_total_limit (those of an earlier run of a resumed
        # job too): keep only what is still on disk.
        record.checkpoints = [c for c in record.checkpoints if Path(c.path).exists()]
        self._jobs[job_uuid] = record
        now = time.monotonic()
        if state_changed or now - running.persisted_at >= PROGRESS_WRITE_INTERVAL_S:
            running.persisted_at = now
            self._persist(record)
        # An epoch's picture is complete after its evaluation, when there is a validation set
        epoch_done = Evaluation if record.spec.num_eval_rows else EpochEnd
        if any(isinstance(e, epoch_done) for e in events) or now - running.curves_drawn_at >= CURVES_REDRAW_S:
            running.curves_drawn_at = now
            self._draw_curves(record)

    def _on_exit(self, job_uuid: str) -> None:
        self._consume_events(job_uuid)  # the last events may have landed after the previous read
        record = self._jobs[job_uuid]
        running = self._running.pop(job_uuid)
        code = running.process.returncode
        record.exit_code = code
        if running.from_standby and record.phase == "starting" and job_uuid not in self._cancel_requested:
            # Its standby process died before it began the job (killed while handing over, or it could not
            # import): not the job's fault. It runs again in a fresh process.
            self._give_up_standbys(f"job {job_uuid}: its standby process exited with code {code} before starting it")
            record.attempts -= 1
            if not self._stopping:
                self._launch(record)
                return
        cancelled = job_uuid in self._cancel_requested
        self._cancel_requested.discard(job_uuid)
        if code == 0 and isinstance(running.reported, Completed):  # a cancel that came after the end is too late
            self._finish(record, "completed")
        elif cancelled:
            self._finish(record, "cancelled")
        elif code == 0 and isinstance(running.reported, Paused):
            self._on_paused(record, running.reported.step)
        elif self._stopping and running.sigterm_at is not None:  # stopped by shutdown(), not by its own fault
            self._on_shutdown_stop(record)
        else:
            reason = running.reported.error if isinstance(running.reported, Failed) else _describe_exit(code)
            self._finish(
                record,
                "failed",
                error=f"{reason} (pid {record.pid}, exit code {code})\n"
                f"--- last lines of {record.log_path} ---\n" + "\n".join(tail_lines(record.log_path, LOG_TAIL_LINES)),
            )
        self._lock.notify_all()

    def _on_paused(self, record: JobRecord, step: int) -> None:
        record.status = "paused"
        record.phase = "queued"
        record.pid = None
        record.resume = True
        record.note = f"paused after step {step}; resuming continues from {last_trainer_checkpoint(record.spec.path)}"
        self._persist(record)
        logger.info("job %s paused after step %d", record.job_uuid, step)

    def _on_shutdown_stop(self, record: JobRecord) -> None:
        if not self._resume:
            self._finish(record, "cancelled", error="cancelled: the server shut down while this job was running")
            return
        checkpoint = last_trainer_checkpoint(record.spec.path)
        where = f"from {checkpoint}" if checkpoint else "from the beginning (no checkpoint yet)"
        self._requeue(record, f"interrupted by a server shutdown; runs again {where} when the server restarts")

    def _grace_expired(self, running: _Running) -> bool:
        grace = min(self._grace_s, SHUTDOWN_GRACE_S) if self._stopping else self._grace_s
        if running.sigterm_at is None or running.sigkill_sent:
            return False
        return time.monotonic() - running.sigterm_at >= grace

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

    def _finish(self, record: JobRecord, status: JobState, error: str | None = None) -> None:
        if status == "failed" and error is not None:  # a process that cannot even write its events cannot say why
            error = explain_full_disk(record.spec.path, error)
        with contextlib.suppress(OSError):  # a pause the job ended before honouring (or a directory never made)
            (record.spec.path / PAUSE_REQUEST_FILE).unlink(missing_ok=True)
        record.status = status
        record.phase = "finished"
        record.completed_at = datetime.now(UTC)
        record.error = error
        record.resume = False
        self._persist(record)
        self._draw_curves(record)
        logger.info("job %s %s%s", record.job_uuid, status, f": {error.splitlines()[0]}" if error else "")

    def _draw_curves(self, record: JobRecord) -> None:
        if self._curves is None:
            return
        progress = f"step {record.step}/{record.total_steps}" if record.total_steps else record.phase
        model = Path(record.spec.model).name
        title = f"{record.job_uuid}: {record.status}, {progress} ({model})"
        self._curves.request(record.spec.path, title, ALGORITHMS[record.spec.algorithm].metrics.panels)

    def _persist(self, record: JobRecord) -> None:
        if self._store is not None:
            self._store.save(record.job_uuid, record.status, record.model_dump_json())


def _is_our_recipe(pid: int, job_dir: str) -> bool:
    """True if ``pid`` is alive and is a training process for this job (pids are reused): started for the job
    directory, or a standby process that moved into it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if job_dir.encode() in cmdline:
            return True
        return STANDBY_FLAG.encode() in cmdline and os.readlink(f"/proc/{pid}/cwd") == job_dir
    except OSError:
        return False


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"training process killed by signal {signal.Signals(-code).name}"
    return f"training process exited with code {code} without reporting an error"
