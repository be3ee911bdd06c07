"""A job's record (everything the API reports about it) and how each event from its training process changes it."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llama_stack_provider_trl.algorithms import JobSpec
from llama_stack_provider_trl.common.events import (
    CheckpointSaved,
    Completed,
    EpochEnd,
    Evaluation,
    Failed,
    JobEvent,
    Metrics,
    Paused,
    PeakMemory,
    Resuming,
    SetupDone,
    Started,
    TrackerFailed,
    TrainingStarted,
    TrainSummary,
)
from llama_stack_provider_trl.common.job_spec import LOG_FILE

# paused: stopped on request with a resumable checkpoint; it waits, out of the queue, until resumed.
JobState = Literal["scheduled", "in_progress", "paused", "completed", "failed", "cancelled"]
# What an in_progress job is doing, from the recipe's events.
Phase = Literal["queued", "starting", "loading", "training", "saving", "finished"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class CheckpointRecord(BaseModel):
    identifier: str
    created_at: datetime
    epoch: int
    step: int
    path: str
    train_loss: float | None = Field(default=None, description="Mean training loss over the epoch that ended here.")
    eval_loss: float | None = Field(default=None, description="Validation loss at this checkpoint, if there is a set.")
    perplexity: float | None = Field(default=None, description="Perplexity of the validation set's chosen answers.")
    reward: float | None = Field(default=None, description="Reinforcement: the mean reward of the last logged step.")
    eval_reward: float | None = Field(default=None, description="Reinforcement: the last validation reward.")


class JobOwner(BaseModel):
    """Who started a job, as the server authenticated the request: a principal and the attributes (roles, teams,
    ...) access rules match against, and the tenant OGX scopes it to. A job has none on a server without
    authentication, or from before owners."""

    principal: str
    attributes: dict[str, list[str]] | None = None
    tenant_id: str | None = None


def same_user(a: JobOwner | None, b: JobOwner | None) -> bool:
    """Whether two jobs' owners are one user (jobs without owners all belong to one: nobody authenticated)."""
    if a is None or b is None:
        return a is b
    return (a.principal, a.tenant_id) == (b.principal, b.tenant_id)


class JobRecord(BaseModel):
    """Everything the API reports about a job. Plain data: it can be copied, stored and served."""

    spec: JobSpec
    owner: JobOwner | None = Field(default=None, description="Who started it; None: nobody authenticated.")
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
    peak_memory_gib_per_rank: list[float] | None = None
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    error: str | None = None
    exit_code: int | None = Field(default=None, description="The training process's; negative: killed by that signal.")
    attempts: int = Field(default=0, description="Times a training process was launched for this job.")
    resume: bool = Field(default=False, description="The next launch resumes from the last Trainer checkpoint.")
    note: str | None = Field(default=None, description="Why a job was requeued or resumed.")
    waiting: str | None = Field(default=None, description="Why a queued job waits though a slot is free.")
    warm_start: bool = Field(default=False, description="Its last launch went to a standby process (imports done).")
    events_offset: int = Field(default=0, description="Bytes of the job's events.jsonl already applied here.")
    rate_since: tuple[float, int] | None = Field(
        default=None, description="(time, step) where this launch began training: the step rate counts from it."
    )
    tracker_errors: dict[str, str] = Field(
        default_factory=dict, description="Each experiment tracker that failed (and was turned off), and why."
    )
    estimated_finish: datetime | None = Field(
        default=None, description="When the last step will be done at the step rate measured so far."
    )

    @property
    def job_uuid(self) -> str:
        return self.spec.job_uuid

    @property
    def log_path(self) -> Path:
        return self.spec.path / LOG_FILE


def apply_event(record: JobRecord, event: JobEvent) -> JobRecord:
    """The record after ``event``: a new record, ``record`` itself is left as it was."""
    match event:
        case Started():  # a new process: its step rate is measured afresh
            update: dict[str, Any] = {"phase": "loading", "rate_since": None, "estimated_finish": None}
        case SetupDone():
            update = {"phase": "training", "setup": event.setup(), "total_steps": event.total_steps}
        case TrainingStarted():  # the step rate counts from here: loading the model and data is left out
            update = {"setup": {**record.setup, "optimizer": event.optimizer}, "rate_since": (event.time, event.step)}
        case Metrics():
            update = {
                "step": event.step,
                "total_steps": event.total_steps,
                "epoch": event.epoch,
                "metrics": event.metrics,
                "tokens_per_s": event.tokens_per_s,
                "mfu": event.mfu,
                "padding_share": event.padding_share,
                **_step_rate(record, event),
            }
        case PeakMemory():
            update = {"peak_memory_gib": event.gib, "peak_memory_gib_per_rank": event.per_rank}
        case TrainSummary():
            update = {"phase": "saving"}
        case Evaluation():
            update = {"eval_metrics": event.metrics}
        case CheckpointSaved():
            checkpoint = CheckpointRecord(
                created_at=datetime.fromtimestamp(event.time, UTC),
                **event.model_dump(include=set(CheckpointRecord.model_fields)),
            )
            kept = [c for c in record.checkpoints if c.identifier != event.identifier]
            update = {"checkpoints": [*kept, checkpoint]}
        case TrackerFailed():
            update = {
                "tracker_errors": {**record.tracker_errors, event.tracker: f"at step {event.step}: {event.error}"}
            }
        case Completed() | Failed() | Paused() | EpochEnd() | Resuming():
            return record  # the outcome is decided with the exit code (JobManager); the rest is for the log
    return record.model_copy(update=update)


def _step_rate(record: JobRecord, event: Metrics) -> dict[str, Any]:
    """The finish estimate after a logged step: the remaining steps at the mean rate since this launch began
    training (after loading its model and data)."""
    if record.rate_since is None:
        return {}
    since_time, since_step = record.rate_since
    if event.step <= since_step:
        return {}
    seconds_per_step = (event.time - since_time) / (event.step - since_step)
    finish = event.time + max(event.total_steps - event.step, 0) * seconds_per_step
    return {"estimated_finish": datetime.fromtimestamp(finish, UTC)}
