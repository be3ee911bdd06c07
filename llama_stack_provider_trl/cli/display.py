"""A job as a person reads it in a terminal, whichever server it runs on: one neutral view (JobView), drawn as a
live progress bar, progress lines, a summary, a table row. Each server's module (stack.py, openai_jobs.py) turns its
own answers into JobViews; nothing here knows either client."""

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

# `watch` exits with the job's outcome, in either server's words (Llama Stack 0.6.1: completed; OpenAI: succeeded);
# 1 and 2 are taken by errors talking to the server and by usage errors.
EXIT_CODES = {"completed": 0, "succeeded": 0, "failed": 3, "cancelled": 4}
FINAL_STATES = tuple(EXIT_CODES)
INTERRUPTED = 130


@dataclass(frozen=True)
class JobView:
    """What the CLI shows of a job. ``metrics`` holds TRL's names (loss, rewards/margins, rewards/accuracies,
    mean_token_accuracy, reward); ``times``, ``settings``, ``files`` and ``trackers`` are labelled lines of the summary,
    ``results`` those of the outcome, in order."""

    id: str
    status: str  # the server's own word: scheduled/in_progress/completed (0.6.1), queued/running/succeeded (OpenAI)
    phase: str | None = None
    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    n_epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float | None = None
    estimated_finish: datetime | None = None  # set while the job runs
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    times: dict[str, datetime] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    trackers: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # what `watch` lists once the job has ended
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES


def progress_fields(view: JobView, now: datetime | None = None, eta: bool = True) -> str:
    """Epoch, the latest loss and preference (or token) metrics, throughput and (``eta``) time left, as one line."""
    metrics = view.metrics
    parts = []
    if view.n_epochs:
        parts.append(f"epoch {view.epoch or 0}/{view.n_epochs}")
    # DPO: the preference margin and accuracy; SFT: the token accuracy (which TRL's DPO logs too); RFT: the reward
    shown = ("rewards/margins", "rewards/accuracies") if "rewards/margins" in metrics else ("mean_token_accuracy",)
    for key, label, spec in (
        ("loss", "loss", ".4f"),
        ("reward", "reward", ".3f"),
        ("rewards/margins", "margin", ".3f"),
        ("rewards/accuracies", "acc", ".2f"),
        ("mean_token_accuracy", "token acc", ".2f"),
    ):
        if key in metrics and (key in ("loss", "reward") or key in shown):
            parts.append(f"{label} {metrics[key]:{spec}}")
    if view.tokens_per_s:
        parts.append(f"{_si(view.tokens_per_s)} tok/s")
    left = time_left(view, now) if eta else None
    if left is not None:
        parts.append(f"ETA {left}")
    return " · ".join(parts)


def time_left(view: JobView, now: datetime | None = None) -> str | None:
    """Time until the server's estimate of the job's finish (measured from its step rate), if it has one."""
    if view.finished or view.estimated_finish is None:
        return None
    seconds = (view.estimated_finish - (now or datetime.now(UTC))).total_seconds()
    return duration(max(seconds, 0.0))


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summary(view: JobView) -> list[str]:
    """What `status JOB` prints: state, progress, what runs, where its files are."""
    lines = [f"{view.id}: {view.status}" + (f" ({view.phase})" if view.phase else "")]
    if view.total_steps:
        lines.append(f"  step {view.step or 0}/{view.total_steps}  {progress_fields(view)}")
    if view.times:
        lines.append("  " + ", ".join(f"{name} {value:%Y-%m-%d %H:%M:%S}" for name, value in view.times.items()))
    if view.settings:
        lines.append("  " + ", ".join(f"{key} {value}" for key, value in view.settings.items()))
    if view.eval_metrics:
        evaluated = ", ".join(f"{k} {v:.4g}" for k, v in sorted(view.eval_metrics.items()) if "runtime" not in k)
        lines.append(f"  validation: {evaluated}")
    lines += [f"  {key}: {value}" for key, value in {**view.files, **view.trackers}.items()]
    if view.error:
        lines.append(f"  error: {view.error}")
    return lines


def table(views: list[JobView]) -> list[str]:
    """What `jobs` prints: a header and one aligned row a job, oldest first (a PHASE column where the server reports
    phases)."""
    phases = any(view.phase for view in views)
    header = ("JOB", "STATUS", *(("PHASE",) if phases else ()), "STEP", "LOSS", "CREATED")
    oldest_first = sorted(views, key=lambda view: view.created_at or datetime.min.replace(tzinfo=UTC))
    rows = [header, *(_row(view, phases) for view in oldest_first)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _row(view: JobView, phases: bool) -> tuple[str, ...]:
    loss = view.metrics.get("loss")
    return (
        view.id,
        view.status,
        *((view.phase or "-",) if phases else ()),
        f"{view.step or 0}/{view.total_steps}" if view.total_steps else "-",
        "-" if loss is None else f"{loss:.4f}",
        f"{view.created_at:%Y-%m-%d %H:%M}" if view.created_at else "-",
    )


def watch(fetch: Callable[[], JobView], interval_s: float, stop_hint: str) -> tuple[JobView | None, int]:
    """Follow the job until it ends (``fetch`` reads it anew); its final view and exit code. Ctrl-C stops watching,
    not the job: (None, 130), after saying so with ``stop_hint`` (the command that would stop the job)."""
    try:
        view = follow(fetch, interval_s)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the job goes on ({stop_hint} stops it)")
        return None, INTERRUPTED
    return view, EXIT_CODES[view.status]


def follow(fetch: Callable[[], JobView], interval_s: float) -> JobView:
    """Show the job's progress until it ends (a live bar on a terminal, one line per change otherwise: logs, CI);
    return its final view."""
    return _follow_live(fetch, interval_s) if Console().is_terminal else _follow_lines(fetch, interval_s)


def print_outcome(view: JobView) -> None:
    """What `watch` ends with: how the job ended, how long it ran, what it left."""
    took = ""
    if view.started_at and view.finished_at:
        took = f" after {duration((view.finished_at - view.started_at).total_seconds())}"
    print(f"{view.id} {view.status}{took}")
    for key, value in view.results.items():
        print(f"  {key}: {value}")
    if view.error:
        print(f"  error: {view.error}", file=sys.stderr)


class _JobProgress(Progress):
    """The bar on one line (job, phase, steps), the numbers on the next, so both fit an 80-column terminal."""

    numbers = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield Text(f"  {self.numbers}", no_wrap=True, overflow="ellipsis")


def _follow_live(fetch: Callable[[], JobView], interval_s: float) -> JobView:
    columns = (
        TextColumn("{task.description}", table_column=Column(max_width=40, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TaskProgressColumn(),
    )
    with _JobProgress(*columns, refresh_per_second=4, expand=True) as progress:
        task = None
        while True:
            view = fetch()
            if task is None:
                task = progress.add_task(view.id, total=None)
            progress.numbers = progress_fields(view)
            progress.update(
                task,
                description=f"{view.id} [bold]{view.phase or view.status}[/]",
                completed=view.step or 0,
                total=view.total_steps,
            )
            if view.finished:
                return view
            time.sleep(interval_s)


def _follow_lines(fetch: Callable[[], JobView], interval_s: float) -> JobView:
    """One line whenever the state, phase, step or metrics change (not for the ETA alone: no line per second)."""
    shown = None
    while True:
        view = fetch()
        head = view.status + (f" {view.phase}" if view.phase else "")
        if view.total_steps:
            head += f" step {view.step or 0}/{view.total_steps}"
            change, line = f"{head} {progress_fields(view, eta=False)}", f"{head} {progress_fields(view)}"
        else:
            change = line = head
        if change != shown:
            print(line, flush=True)
            shown = change
        if view.finished:
            return view
        time.sleep(interval_s)


def _si(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def timestamp(seconds: int | float | None) -> datetime | None:
    """A Unix time (OpenAI's objects carry them) as an aware datetime."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
