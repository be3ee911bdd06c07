"""What a training process tells the server, as typed events on an append-only JSON-lines channel.

The recipe appends one line per event to ``<job_dir>/events.jsonl``; the server reads the lines added since
its last read and applies each to the job's record (engine/job_record.py). Every event is one of the models
below, told apart by its ``event`` name. A line is only read once its newline is there, so a half-written
line is never parsed; a line that does not parse or validate is logged with its byte offset and skipped, and
the lines after it still apply.
"""

import logging
import os
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

logger = logging.getLogger(__name__)


class _Event(BaseModel):
    time: float = Field(default_factory=time.time)


class Started(_Event):
    event: Literal["started"] = "started"


class SetupDone(_Event):
    """What the recipe resolved before its first step."""

    event: Literal["setup_done"] = "setup_done"
    total_steps: int
    steps_per_epoch: int
    device: str | None = None
    cpu_threads: int | None = None  # torch's intra-op threads in each process (rank)
    world_size: int | None = None
    strategy: str | None = None
    precision: str | None = None
    padding_free: bool | None = None
    master_weights: str | None = None
    compiled_layers: int | None = None
    loss_on: str | None = None  # SFT: the tokens that carry the loss (completion, assistant or all)
    train_rows: int | None = None
    eval_rows: int | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None

    def setup(self) -> dict[str, object]:
        return self.model_dump(exclude={"event", "time"}, exclude_unset=True)


class TrainingStarted(_Event):
    event: Literal["training_started"] = "training_started"
    optimizer: str
    step: int = Field(default=0, description="The step training starts from: 0, or a resumed checkpoint's.")


class Resuming(_Event):
    event: Literal["resuming"] = "resuming"
    checkpoint: str


class RewardStats(BaseModel):
    """A reinforcement step's rewards, from TRL's logged numbers: what the grader gave the sampled answers."""

    mean: float
    std: float | None = None  # over every answer of the step
    sub_rewards: dict[str, float] = Field(default_factory=dict)  # each named sub-grader's mean (a multi grader's)
    kl: float | None = None  # against the initial model, when a KL weight (beta) is set
    completion_length: float | None = None  # mean tokens per sampled answer
    clipped_ratio: float | None = None  # share of answers cut at max_completion_length


class Metrics(_Event):
    """One logging step: TRL's logged numbers and the throughput measured so far."""

    event: Literal["metrics"] = "metrics"
    step: int
    total_steps: int
    epoch: int
    metrics: dict[str, float]
    tokens_per_s: float | None = None
    mfu: float | None = None
    padding_share: float | None = None
    reward: RewardStats | None = None  # reinforcement jobs


class EpochEnd(_Event):
    event: Literal["epoch_end"] = "epoch_end"
    epoch: int
    step: int
    train_loss: float | None = None


class Evaluation(_Event):
    event: Literal["eval"] = "eval"
    epoch: int
    step: int
    metrics: dict[str, float]
    perplexity: float | None = None
    reward: float | None = None  # reinforcement jobs: the validation prompts' mean reward


class CheckpointSaved(_Event):
    event: Literal["checkpoint"] = "checkpoint"
    identifier: str
    epoch: int
    step: int
    path: str
    train_loss: float | None = None
    eval_loss: float | None = None
    perplexity: float | None = None
    reward: float | None = None  # reinforcement jobs: the last logged step's mean reward
    eval_reward: float | None = None  # and the last validation reward


class TrainSummary(_Event):
    """Trainer's end-of-training summary: training is over, saving begins."""

    event: Literal["train_summary"] = "train_summary"
    metrics: dict[str, float]


class PeakMemory(_Event):
    event: Literal["peak_memory"] = "peak_memory"
    gib: float = Field(description="The largest over every rank.")
    per_rank: list[float] | None = None


class TrackerFailed(_Event):
    """An experiment tracker raised: it is off for the rest of the job, and the training goes on."""

    event: Literal["tracker_failed"] = "tracker_failed"
    tracker: str
    error: str
    step: int


class Completed(_Event):
    event: Literal["completed"] = "completed"


class Paused(_Event):
    """Training stopped on the server's pause request, after saving a resumable checkpoint at ``step``."""

    event: Literal["paused"] = "paused"
    step: int


class Failed(_Event):
    event: Literal["failed"] = "failed"
    error: str


JobEvent = Annotated[
    Started
    | SetupDone
    | TrainingStarted
    | Resuming
    | Metrics
    | EpochEnd
    | Evaluation
    | CheckpointSaved
    | TrainSummary
    | PeakMemory
    | TrackerFailed
    | Completed
    | Paused
    | Failed,
    Field(discriminator="event"),
]
_JOB_EVENT: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)


def parse_event(line: bytes | str) -> JobEvent:
    """One event from its JSON line; raises ValidationError if it is not one."""
    return _JOB_EVENT.validate_json(line)


class EventWriter:
    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def emit(self, event: _Event) -> None:
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventReader:
    def __init__(self, path: Path, offset: int = 0, job: str = "") -> None:
        self._path = path
        self._offset = offset  # bytes already read (or to skip)
        self._job = job or path.parent.name
        self.rewinds = 0  # times the file was found shorter than what was read, and read again from the start

    @property
    def offset(self) -> int:
        return self._offset

    def read_new(self) -> list[JobEvent]:
        """The events completed since the last read. A bad line is logged and skipped, never fatal."""
        try:
            with self._path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # rewritten shorter (truncated, replaced): what it holds now is all new
                    logger.warning(
                        "job %s: %s shrank to %d bytes, below the %d already read; reading it from the start",
                        self._job,
                        self._path,
                        size,
                        self._offset,
                    )
                    self._offset = 0
                    self.rewinds += 1
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        complete, _, _ = chunk.rpartition(b"\n")
        if not complete:
            return []
        events = []
        offset = self._offset
        for line in complete.split(b"\n"):
            if line.strip():
                try:
                    events.append(parse_event(line))
                except ValidationError as exc:
                    logger.warning(
                        "job %s: skipping the event at byte %d of %s: %s",
                        self._job,
                        offset,
                        self._path,
                        exc.errors(include_url=False)[0]["msg"] if exc.errors() else exc,
                    )
            offset += len(line) + 1
        self._offset += len(complete) + 1
        return events
