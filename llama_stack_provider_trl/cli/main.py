"""The `llama-stack-trl` command: jobs, status, watch, logs, cancel, artifacts, train."""

import argparse
import ast
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_stack_client import APIConnectionError, APIStatusError, LlamaStackClient
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

from llama_stack_provider_trl.cli import train_file
from llama_stack_provider_trl.cli.display import (
    EXIT_CODES,
    FINAL_STATES,
    duration,
    progress_fields,
    resources,
    summary,
    table_row,
)

DEFAULT_URL = "http://localhost:8321"
SERVER_ERROR = 1  # the server refused, or could not be reached; argparse exits 2 on usage errors
INTERRUPTED = 130
CURVES_WAIT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    # llama-stack-client turns on INFO logging at import (one line per HTTP request): a command prints its own
    logging.getLogger().setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    client = LlamaStackClient(base_url=args.url, max_retries=1, timeout=args.timeout)
    try:
        return args.command(client, args)
    except APIStatusError as exc:
        print(f"error: {_server_message(exc)}", file=sys.stderr)
        return SERVER_ERROR
    except APIConnectionError as exc:
        print(f"error: cannot reach the Llama Stack server at {args.url} ({exc.message})", file=sys.stderr)
        return SERVER_ERROR
    except train_file.TrainFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return SERVER_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-stack-trl",
        description="Follow and submit TRL post-training jobs on a running Llama Stack server.",
        epilog="Exit codes of watch (and train --watch): 0 completed, 3 failed, 4 cancelled; "
        "1: the server refused or could not be reached.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("LLAMA_STACK_URL", DEFAULT_URL),
        help=f"the server (default: $LLAMA_STACK_URL, else {DEFAULT_URL})",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer (default 60)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[LlamaStackClient, argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=run)
        return sub

    command("jobs", _jobs, "list every job with its state and progress")
    sub = command("status", _status, "one job's state, progress, settings and files")
    sub.add_argument("job")
    sub.add_argument("--json", action="store_true", help="the whole status response, as JSON")
    sub = command("watch", _watch, "a live progress bar until the job ends; exits with its outcome")
    sub.add_argument("job")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between status polls (default 1)")
    sub = command("logs", _logs, "the last lines of the job's training log")
    sub.add_argument("job")
    sub.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls with -f (default 1)")
    sub = command("cancel", _cancel, "cancel a scheduled or running job and wait until it has stopped")
    sub.add_argument("job")
    sub.add_argument("--no-wait", action="store_true", help="return once the cancel is sent")
    sub = command("artifacts", _artifacts, "the job's checkpoints and files")
    sub.add_argument("job")
    sub = command("train", _train, "register the YAML's JSONL data as datasets and submit its job")
    sub.add_argument("config", type=Path, metavar="CONFIG.yaml")
    sub.add_argument("--watch", action="store_true", help="then watch it, exiting with its outcome")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between status polls (default 1)")
    return parser


def _jobs(client: LlamaStackClient, args: argparse.Namespace) -> int:
    statuses = [_get_status(client, job.job_uuid) for job in client.alpha.post_training.job.list()]
    statuses.sort(key=lambda s: s.scheduled_at or datetime.min.replace(tzinfo=UTC))
    rows = [("JOB", "STATUS", "PHASE", "STEP", "LOSS", "STARTED"), *(table_row(s) for s in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _status(client: LlamaStackClient, args: argparse.Namespace) -> int:
    status = _get_status(client, args.job)
    if args.json:
        print(json.dumps(status.to_dict(mode="json"), indent=2))
    else:
        print("\n".join(summary(status)))
    return 0


def _watch(client: LlamaStackClient, args: argparse.Namespace) -> int:
    return watch(client, args.job, args.interval)


def watch(client: LlamaStackClient, job_uuid: str, interval_s: float) -> int:
    """Follow the job until it ends, print how it ended, return its exit code."""
    try:
        status = follow(client, job_uuid, interval_s)
    except KeyboardInterrupt:
        print(f"\nstopped watching; {job_uuid} goes on (llama-stack-trl cancel {job_uuid} stops it)")
        return INTERRUPTED
    _print_outcome(status)
    return EXIT_CODES[status.status]


def follow(client: LlamaStackClient, job_uuid: str, interval_s: float) -> Any:
    """Show the job's progress until it ends (a live bar on a terminal, one line per change otherwise: logs, CI);
    return its final status, with its picture once the server has drawn it."""
    status = _follow_live(client, job_uuid, interval_s) if Console().is_terminal else None
    if status is None:
        status = _follow_lines(client, job_uuid, interval_s)
    deadline = time.monotonic() + CURVES_WAIT_S
    while resources(status).get("step") and not resources(status).get("curves") and time.monotonic() < deadline:
        time.sleep(0.2)  # the server draws the final picture right after the job ends
        status = _get_status(client, job_uuid)
    return status


class _JobProgress(Progress):
    """The bar on one line (job, phase, steps), the numbers on the next, so both fit an 80-column terminal."""

    numbers = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield Text(f"  {self.numbers}", no_wrap=True, overflow="ellipsis")


def _follow_live(client: LlamaStackClient, job_uuid: str, interval_s: float) -> Any:
    columns = (
        TextColumn("{task.description}", table_column=Column(max_width=40, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TaskProgressColumn(),
    )
    with _JobProgress(*columns, refresh_per_second=4, expand=True) as progress:
        task = progress.add_task(job_uuid, total=None)
        while True:
            status = _get_status(client, job_uuid)
            res = resources(status)
            progress.numbers = progress_fields(status)
            progress.update(
                task,
                description=f"{job_uuid} [bold]{res.get('phase', status.status)}[/]",
                completed=res.get("step") or 0,
                total=res.get("total_steps"),
            )
            if status.status in FINAL_STATES:
                return status
            time.sleep(interval_s)


def _follow_lines(client: LlamaStackClient, job_uuid: str, interval_s: float) -> Any:
    """One line whenever the state, phase, step or metrics change (not for the ETA alone: no line per second)."""
    shown = None
    while True:
        status = _get_status(client, job_uuid)
        res = resources(status)
        head = f"{status.status} {res.get('phase', '')}"
        if res.get("total_steps"):
            head += f" step {res.get('step') or 0}/{res['total_steps']}"
            change, line = f"{head} {progress_fields(status, eta=False)}", f"{head} {progress_fields(status)}"
        else:
            change = line = head
        if change != shown:
            print(line, flush=True)
            shown = change
        if status.status in FINAL_STATES:
            return status
        time.sleep(interval_s)


def _print_outcome(status: Any) -> None:
    res = resources(status)
    took = ""
    if status.started_at and status.completed_at:
        took = f" after {duration((status.completed_at - status.started_at).total_seconds())}"
    print(f"{status.job_uuid} {status.status}{took}")
    for checkpoint in status.checkpoints:
        print(f"  checkpoint {checkpoint.identifier}: {checkpoint.path}")
    if res.get("curves"):
        print(f"  curves: {res['curves']}")
    if res.get("error"):
        print(f"  error: {res['error']}", file=sys.stderr)


def _logs(client: LlamaStackClient, args: argparse.Namespace) -> int:
    printed = 0  # lines of the log already printed, by line number
    while True:
        status = _get_status(client, args.job)
        res = resources(status)
        lines, total = res.get("logs") or [], res.get("log_lines") or 0
        first = total - len(lines)  # line number (0-based) of lines[0]
        if printed < first:
            print(f"... {first - printed} lines not shown: the whole log is {res.get('log_path')} on the server")
        for line in lines[max(printed - first, 0) :]:
            print(line, flush=True)
        printed = max(printed, total)
        if not args.follow or status.status in FINAL_STATES:
            return 0
        time.sleep(args.interval)


def _cancel(client: LlamaStackClient, args: argparse.Namespace) -> int:
    client.alpha.post_training.job.cancel(job_uuid=args.job)
    if args.no_wait:
        print(f"{args.job}: cancel sent")
        return 0
    while (status := _get_status(client, args.job)).status not in FINAL_STATES:
        time.sleep(0.5)
    print(f"{args.job}: {status.status}")
    return 0


def _artifacts(client: LlamaStackClient, args: argparse.Namespace) -> int:
    artifacts = client.alpha.post_training.job.artifacts(job_uuid=args.job)
    for checkpoint in artifacts.checkpoints:
        metrics = checkpoint.training_metrics
        scores = (
            f"  train_loss {metrics.train_loss:.4f} validation_loss {metrics.validation_loss:.4f} "
            f"perplexity {metrics.perplexity:.3f}"
            if metrics
            else ""
        )
        print(f"{checkpoint.identifier}  epoch {checkpoint.epoch}  {checkpoint.path}{scores}")
    # The 0.6.1 artifacts response holds checkpoints only; the job's other files are named in its status.
    res = resources(_get_status(client, args.job))
    for key in ("curves", "log_path"):
        if res.get(key):
            print(f"{key}  {res[key]}")
    for name, tracker in (res.get("trackers") or {}).items():
        print(f"{name}  {tracker['run']}")
    return 0


def _train(client: LlamaStackClient, args: argparse.Namespace) -> int:
    job_uuid = train_file.submit(client, args.config)
    print(job_uuid, flush=True)
    return watch(client, job_uuid, args.interval) if args.watch else 0


def _get_status(client: LlamaStackClient, job_uuid: str) -> Any:
    return client.alpha.post_training.job.status(job_uuid=job_uuid)


def _server_message(exc: APIStatusError) -> str:
    """The server's own words. Llama Stack 0.6.1 answers {"error": {"message": ...}}; when the request does not
    fit the API's schema the message is a printed dict of {"errors": [...]}, each named by its field's path."""
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return f"{exc.message} (HTTP {exc.status_code})"
    if message.startswith("{'errors': ["):
        with contextlib.suppress(ValueError, SyntaxError):
            errors = ast.literal_eval(message)["errors"]
            message = "; ".join(_field_error(error) for error in errors)
    return f"{message} (HTTP {exc.status_code})"


def _field_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    path = ".".join(str(part) for part in error.get("loc", []) if part != "body")
    return f"{path}: {error.get('msg', error)}" if path else str(error.get("msg", error))


if __name__ == "__main__":
    sys.exit(main())
