"""A job's status as a person reads it in a terminal: one progress line, a summary, a table row."""

from datetime import UTC, datetime
from typing import Any

FINAL_STATES = ("completed", "failed", "cancelled")
# `watch` exits with the job's outcome; 1 and 2 are taken by errors talking to the server and by usage errors.
EXIT_CODES = {"completed": 0, "failed": 3, "cancelled": 4}


def resources(status: Any) -> dict[str, Any]:
    return status.resources_allocated or {}


def progress_fields(status: Any, now: datetime | None = None, eta: bool = True) -> str:
    """Epoch, the latest loss and preference (or token) metrics, throughput and (``eta``) time left, as one line."""
    res = resources(status)
    metrics = res.get("metrics") or {}
    parts = []
    if res.get("n_epochs"):
        parts.append(f"epoch {res.get('epoch') or 0}/{res['n_epochs']}")
    # DPO: the preference margin and accuracy; SFT: the token accuracy (which TRL's DPO logs too)
    shown = ("rewards/margins", "rewards/accuracies") if "rewards/margins" in metrics else ("mean_token_accuracy",)
    for key, label, spec in (
        ("loss", "loss", ".4f"),
        ("rewards/margins", "margin", ".3f"),
        ("rewards/accuracies", "acc", ".2f"),
        ("mean_token_accuracy", "token acc", ".2f"),
    ):
        if key in metrics and (key == "loss" or key in shown):
            parts.append(f"{label} {metrics[key]:{spec}}")
    if res.get("tokens_per_s"):
        parts.append(f"{_si(res['tokens_per_s'])} tok/s")
    left = time_left(status, now) if eta else None
    if left is not None:
        parts.append(f"ETA {left}")
    return " · ".join(parts)


def time_left(status: Any, now: datetime | None = None) -> str | None:
    """Time until the server's ``estimated_finish`` (measured from the job's step rate), if it has one."""
    finish = resources(status).get("estimated_finish")
    if status.status != "in_progress" or not finish:
        return None
    seconds = (datetime.fromisoformat(finish) - (now or datetime.now(UTC))).total_seconds()
    return duration(max(seconds, 0.0))


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summary(status: Any) -> list[str]:
    """What `status JOB` prints: state, progress, what runs, where its files are."""
    res = resources(status)
    lines = [f"{status.job_uuid}: {status.status} ({res.get('phase', '?')})"]
    if res.get("total_steps"):
        lines.append(f"  step {res.get('step', 0)}/{res['total_steps']}  {progress_fields(status)}")
    when = [
        f"{name} {value:%Y-%m-%d %H:%M:%S}"
        for name, value in (
            ("scheduled", status.scheduled_at),
            ("started", status.started_at),
            ("finished", status.completed_at),
        )
        if value is not None
    ]
    lines.append("  " + ", ".join(when))
    what = [f"{key} {res[key]}" for key in ("model", "device", "precision", "loss_type") if res.get(key) is not None]
    if what:
        lines.append("  " + ", ".join(what))
    if res.get("eval_metrics"):
        evaluated = ", ".join(f"{k} {v:.4g}" for k, v in sorted(res["eval_metrics"].items()) if "runtime" not in k)
        lines.append(f"  validation: {evaluated}")
    for key in ("curves", "log_path"):
        if res.get(key):
            lines.append(f"  {key}: {res[key]}")
    for name, tracker in (res.get("trackers") or {}).items():
        failed = f" (failed {tracker['error']})" if tracker.get("error") else ""
        lines.append(f"  {name}: {tracker['run']}{failed}")
    if res.get("error"):
        lines.append(f"  error: {res['error']}")
    return lines


def table_row(status: Any) -> tuple[str, ...]:
    res = resources(status)
    loss = (res.get("metrics") or {}).get("loss")
    step = f"{res.get('step', 0)}/{res['total_steps']}" if res.get("total_steps") else "-"
    started = f"{status.started_at:%Y-%m-%d %H:%M}" if status.started_at else "-"
    return (
        status.job_uuid,
        status.status,
        res.get("phase", "-"),
        step,
        "-" if loss is None else f"{loss:.4f}",
        started,
    )


def _si(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
