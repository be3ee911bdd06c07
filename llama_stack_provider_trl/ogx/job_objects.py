"""OpenAI's objects of a job, made from the engine's record and events: its status, its events list, its
checkpoints and its result file; and what the job object holds beyond the engine's record (``openai_job.json``)."""

import csv
import io
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llama_stack_provider_trl.algorithms import ALGORITHMS
from llama_stack_provider_trl.algorithms.algorithm import MetricNames
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
from llama_stack_provider_trl.engine.job_record import FINAL_STATES, CheckpointRecord, JobRecord
from llama_stack_provider_trl.ogx.api import (
    CheckpointMetrics,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Hyperparameters,
    JobStatus,
    Method,
    OpenAIError,
)

OPENAI_JOB_FILE = "openai_job.json"

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


def page_of[T](
    items: list[T], after: str | None, limit: int, field: str, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    start = 0
    if after is not None:
        ids = [key(item) for item in items]
        if after not in ids:
            raise OpenAIError(HTTPStatus.BAD_REQUEST, f"no item '{after}' in this list to list after", param=field)
        start = ids.index(after) + 1
    return items[start : start + limit], start + limit < len(items)


def error_message(error: str | None) -> str:
    """The reason, without the log tail the engine appends."""
    return (error or "the job failed").split("\n--- last lines of", 1)[0]


def trained_tokens(record: JobRecord) -> int | None:
    tokens = record.metrics.get("num_tokens")
    return int(tokens) if tokens is not None else None


def checkpoint_name(openai_job: OpenAIJob, step: int, identifier: str) -> str:
    if identifier.endswith("-final"):
        return openai_job.fine_tuned_model
    return f"{openai_job.fine_tuned_model}:ckpt-step-{step}"


def checkpoint_object(
    record: JobRecord, openai_job: OpenAIJob, checkpoint: CheckpointRecord
) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=f"ftckpt-{checkpoint.identifier}",
        created_at=int(checkpoint.created_at.timestamp()),
        fine_tuned_model_checkpoint=checkpoint_name(openai_job, checkpoint.step, checkpoint.identifier),
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


def openai_events(record: JobRecord, openai_job: OpenAIJob, job_events: list[JobEvent]) -> list[FineTuningJobEvent]:
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
            found.append((end, "error", f"Fine-tuning job failed: {error_message(record.error)}", None))
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


def results_csv(job_events: list[JobEvent], names: MetricNames) -> str:
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
