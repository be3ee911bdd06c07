"""``curves.png``: a picture of a job's training, drawn from its events.jsonl.

The server draws it, not the training process: the events file already holds every logged step and evaluation
of every recipe (DPO, SFT) and of every launch of a resumed job, the picture is redrawn after a job failed or
was cancelled (when its process is gone), and no training step waits for matplotlib. Drawing happens on a
thread of its own (CurvesPainter), so the job watcher and status requests never wait for it either; it keeps each
job's parsed events (engine/event_history.py), so a redraw reads only the lines added since the last one.
"""

import contextlib
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llama_stack_provider_trl.common.events import EpochEnd, Evaluation, JobEvent, Metrics, SetupDone
from llama_stack_provider_trl.common.job_spec import CURVES_FILE
from llama_stack_provider_trl.engine.event_history import EventHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

SMOOTH_ABOVE_POINTS = 30  # longer series are drawn faintly, with an exponential moving average over them


@dataclass
class Panel:
    title: str
    ylabel: str
    train: str  # a key of the Metrics events ("tokens_per_s": the event's own field)
    validation: str | None = None  # a key of the Evaluation events
    share: bool = False  # values in [0, 1], shown in percent
    noisy: bool = True  # a per-step value worth smoothing (not a schedule, nor a rate averaged already)
    zero_line: bool = False  # a line at 0 (a reward margin: above, the policy prefers the chosen answers)
    spread: str | None = None  # a key of the Metrics events: the standard deviation drawn as a band around train


# Every job's panels; the algorithm's own (its MetricNames.panels) go after the loss. Only the panels whose series
# a job logged are drawn.
LOSS = Panel("Loss", "loss", "loss", "eval_loss")
SHARED_PANELS = (
    Panel("Learning rate", "learning rate", "learning_rate", noisy=False),
    Panel("Throughput", "tokens/s (real, no padding)", "tokens_per_s", noisy=False),  # the mean since step 3
    Panel("Gradient norm", "gradient L2 norm", "grad_norm"),
)


@dataclass
class Series:
    """What the picture needs from a job's events, by optimizer step (a step logged twice keeps its last value:
    a resumed job repeats the steps after its last checkpoint)."""

    train: dict[str, dict[int, float]] = field(default_factory=dict)
    validation: dict[str, dict[int, float]] = field(default_factory=dict)
    epoch_ends: dict[int, int] = field(default_factory=dict)  # step -> epoch
    total_steps: int | None = None

    @classmethod
    def of(cls, events: list[JobEvent]) -> "Series":
        series = cls()
        for event in events:
            match event:
                case SetupDone():
                    series.total_steps = event.total_steps
                case Metrics():
                    values = dict(event.metrics)
                    if event.tokens_per_s is not None:
                        values["tokens_per_s"] = event.tokens_per_s
                    for key, value in values.items():
                        if math.isfinite(value):
                            series.train.setdefault(key, {})[event.step] = value
                    series.total_steps = event.total_steps
                case Evaluation():
                    for key, value in event.metrics.items():
                        if math.isfinite(value):
                            series.validation.setdefault(key, {})[event.step] = value
                case EpochEnd():
                    series.epoch_ends[event.step] = event.epoch
        return series


def draw_curves(
    job_dir: Path, title: str, algorithm_panels: Sequence[Panel] = (), history: EventHistory | None = None
) -> Path | None:
    """Draw ``<job_dir>/curves.png`` from the job's events; None while it has logged nothing to draw. ``history``:
    where the events parsed for earlier pictures are kept, so only new lines are read.

    The picture is written next to its final name and moved there, so a reader never sees half a file."""
    series = Series.of((history or EventHistory(kept_jobs=1)).events(job_dir))
    panels = [
        p
        for p in (LOSS, *algorithm_panels, *SHARED_PANELS)
        if series.train.get(p.train) or (p.validation and series.validation.get(p.validation))
    ]
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the server imports matplotlib only to draw
    from matplotlib.figure import Figure

    columns = 3 if len(panels) > 4 else 2
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.6 * rows + 0.7), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=13)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, panel in zip(axes, panels, strict=False):
        _draw_panel(ax, panel, series)
    axes[0].legend(fontsize=8, loc="best")  # one legend: every panel draws train, validation and epochs alike
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    target = job_dir / CURVES_FILE
    partial = target.with_name(f".{CURVES_FILE}.partial")
    drawn = {
        "panels": ", ".join(p.title for p in panels),
        "validation": ", ".join(p.validation for p in panels if p.validation and series.validation.get(p.validation)),
    }
    figure.savefig(partial, format="png", metadata=drawn)  # what it shows, as PNG text (for tools and tests)
    os.replace(partial, target)
    return target


def _draw_panel(ax: "Axes", panel: Panel, series: Series) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    train = series.train.get(panel.train, {})
    if train:
        steps, values = zip(*sorted(train.items()), strict=True)
        if panel.noisy and len(steps) > SMOOTH_ABOVE_POINTS:
            ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _ema(values, span=max(len(values) // 20, 5)), color="tab:blue", label="train (smoothed)")
        else:
            ax.plot(steps, values, color="tab:blue", marker="." if len(steps) < 15 else None, label="train")
        spread = series.train.get(panel.spread or "", {})
        if spread:
            low = [value - spread.get(step, 0.0) for step, value in zip(steps, values, strict=True)]
            high = [value + spread.get(step, 0.0) for step, value in zip(steps, values, strict=True)]
            ax.fill_between(steps, low, high, color="tab:blue", alpha=0.15, linewidth=0, label="train ± std")
    validation = series.validation.get(panel.validation or "", {})
    if validation:
        steps, values = zip(*sorted(validation.items()), strict=True)
        ax.plot(steps, values, color="tab:orange", marker="o", label="validation")
    for step, epoch in sorted(series.epoch_ends.items()):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1, label="epoch end" if epoch == 1 else None)
    if panel.zero_line:
        ax.axhline(0, color="black", linewidth=0.6)
    if panel.share:
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if panel.train == "learning_rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if series.total_steps:  # the whole run, with room for the markers of the last step
        ax.set_xlim(0, series.total_steps * 1.02 + 0.1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(panel.title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)


def _ema(values: tuple[float, ...], span: int) -> list[float]:
    alpha = 2 / (span + 1)
    smoothed, current = [], values[0]
    for value in values:
        current = alpha * value + (1 - alpha) * current
        smoothed.append(current)
    return smoothed


class CurvesPainter:
    """Redraws jobs' pictures on one thread of its own. Requests for a job that is still waiting are merged, so a
    burst of epoch ends costs one drawing."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[str, Sequence[Panel]]] = {}  # job_dir -> title, panels; in request order
        self._lock = threading.Condition()
        self._closed = False
        self._unavailable = False
        self._history = EventHistory()  # each job's events parsed once, across its redraws
        self._thread = threading.Thread(target=self._run, name="trl-curves", daemon=True)
        self._thread.start()

    def request(self, job_dir: Path, title: str, algorithm_panels: Sequence[Panel] = ()) -> None:
        with self._lock:
            if self._closed or self._unavailable:
                return
            self._pending[job_dir] = (title, algorithm_panels)
            self._lock.notify()

    def close(self, timeout_s: float = 2.0) -> None:
        """Draw what is pending (within ``timeout_s``), then stop."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:
                    return
                job_dir = next(iter(self._pending))
                title, panels = self._pending.pop(job_dir)
            self._draw(job_dir, title, panels)

    def _draw(self, job_dir: Path, title: str, panels: Sequence[Panel]) -> None:
        try:
            draw_curves(job_dir, title, panels, self._history)
        except ImportError as exc:  # matplotlib is not installed: no pictures, say so once
            logger.warning("no curves.png for jobs: %s (pip install matplotlib)", exc)
            with self._lock:
                self._unavailable = True
                self._pending.clear()
        except Exception:  # a picture is never worth a job: log it and go on
            logger.exception("job %s: drawing %s failed", job_dir.name, CURVES_FILE)
            with contextlib.suppress(OSError):
                (job_dir / f".{CURVES_FILE}.partial").unlink(missing_ok=True)
