"""The `llama-stack-trl` command: jobs, status, watch, logs, cancel, pause, resume, artifacts, train (and on OGX
chat), on a Llama
Stack 0.6.1 server (stack.py, llama-stack-client) or, with --ogx, an OGX server (openai_jobs.py, openai). Each
server's module is imported only when used, so either client alone is enough for its server."""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from llama_stack_provider_trl.cli import train_file
from llama_stack_provider_trl.cli.display import INTERRUPTED, JobView, print_outcome, summary, table, watch

SERVER_ERROR = 1  # the server refused, or could not be reached; argparse exits 2 on usage errors
USAGE_ERROR = 2
API_VARIABLE = "LLAMA_STACK_TRL_API"  # "openai": the server is OGX, as --ogx says
OGX_ONLY = ("pause", "resume", "chat")


class JobsServer(Protocol):
    """What the commands need of a server (stack.StackJobs, openai_jobs.OpenAIJobs)."""

    def view(self, job_id: str) -> JobView: ...
    def detailed(self, job_id: str) -> JobView: ...
    def final(self, view: JobView) -> JobView: ...
    def views(self) -> list[JobView]: ...
    def raw(self, job_id: str) -> dict[str, Any]: ...
    def cancel(self, job_id: str) -> None: ...
    def logs(self, job_id: str, follow: bool, interval_s: float) -> None: ...
    def artifacts(self, job_id: str) -> list[str]: ...
    def submit(self, config_path: Path) -> str: ...


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    ogx = args.ogx or os.environ.get(API_VARIABLE, "").lower() == "openai"
    if args.command_name in OGX_ONLY and not ogx:
        parser.error(f"{args.command_name} is OGX's (--ogx): Llama Stack 0.6.1's post_training API has none")
    if ogx:
        from llama_stack_provider_trl.cli import openai_jobs as server_module

        connect: Callable[[str, float], JobsServer] = server_module.OpenAIJobs
    else:
        from llama_stack_provider_trl.cli import stack as server_module  # type: ignore[no-redef]

        connect = server_module.StackJobs
    # llama-stack-client turns on INFO logging at import (one line per HTTP request): a command prints its own
    logging.getLogger().setLevel(logging.WARNING)
    url = args.url or os.environ.get(server_module.URL_VARIABLE) or server_module.DEFAULT_URL
    args.cli = f"llama-stack-trl{' --ogx' if ogx else ''}"
    try:
        return args.command(connect(url, args.timeout), args)
    except train_file.TrainFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return SERVER_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        message = server_module.error_message(exc, url)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return SERVER_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-stack-trl",
        description="Follow and submit TRL post-training jobs on a running Llama Stack 0.6.1 or (--ogx) OGX server.",
        epilog="Exit codes of watch (and train --watch): 0 completed (succeeded), 3 failed, 4 cancelled; "
        "1: the server refused or could not be reached.",
    )
    parser.add_argument(
        "--ogx",
        action="store_true",
        help=f"the server is OGX: OpenAI's fine-tuning API through the openai client (or ${API_VARIABLE}=openai)",
    )
    parser.add_argument(
        "--url",
        help="the server (default: $LLAMA_STACK_URL, else http://localhost:8321; "
        "with --ogx: $OGX_URL, else http://localhost:8321/v1)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer (default 60)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[JobsServer, argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=run, command_name=name)
        return sub

    command("jobs", _jobs, "list every job with its state and progress")
    sub = command("status", _status, "one job's state, progress, settings and files")
    sub.add_argument("job")
    sub.add_argument("--json", action="store_true", help="the server's whole answer, as JSON")
    sub = command("watch", _watch, "a live progress bar until the job ends; exits with its outcome")
    sub.add_argument("job")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between status polls (default 1)")
    sub = command("logs", _logs, "the last lines of the job's training log (OGX: the job's events)")
    sub.add_argument("job")
    sub.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls with -f (default 1)")
    sub = command("cancel", _cancel, "cancel a scheduled or running job and wait until it has stopped")
    sub.add_argument("job")
    sub.add_argument("--no-wait", action="store_true", help="return once the cancel is sent")
    sub = command("pause", _pause, "OGX: pause a queued or running job (a checkpoint after its current step)")
    sub.add_argument("job")
    sub.add_argument("--no-wait", action="store_true", help="return once the pause is sent")
    sub = command("resume", _resume, "OGX: queue a paused job again; it continues from its checkpoint")
    sub.add_argument("job")
    sub = command("artifacts", _artifacts, "the job's checkpoints and files")
    sub.add_argument("job")
    sub = command("train", _train, "upload or register the YAML's local JSONL data and submit its job")
    sub.add_argument("config", type=Path, metavar="CONFIG.yaml")
    sub.add_argument("--watch", action="store_true", help="then watch it, exiting with its outcome")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between status polls (default 1)")
    sub = command("chat", _chat, "OGX: a conversation with a model (a job's fine_tuned_model), its answers streamed")
    sub.add_argument("model", metavar="MODEL")
    sub.add_argument("-m", "--message", action="append", help="say this and exit (again: the next turn)")
    sub.add_argument("--system", help="a system message first")
    sub.add_argument("--max-tokens", type=int, default=256, help="tokens an answer may take (default 256)")
    sub.add_argument("--temperature", type=float, default=0.7, help="0: greedy (default 0.7)")
    return parser


def _jobs(server: JobsServer, args: argparse.Namespace) -> int:
    print("\n".join(table(server.views())))
    return 0


def _status(server: JobsServer, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(server.raw(args.job), indent=2))
    else:
        print("\n".join(summary(server.detailed(args.job))))
    return 0


def _watch(server: JobsServer, args: argparse.Namespace) -> int:
    return _watch_job(server, args.job, args)


def _watch_job(server: JobsServer, job_id: str, args: argparse.Namespace) -> int:
    view, code = watch(lambda: server.view(job_id), args.interval, f"{args.cli} cancel {job_id}")
    if view is not None:
        print_outcome(server.final(view))
    return code


def _logs(server: JobsServer, args: argparse.Namespace) -> int:
    server.logs(args.job, args.follow, args.interval)
    return 0


def _cancel(server: JobsServer, args: argparse.Namespace) -> int:
    server.cancel(args.job)
    return _settled(server, args, "cancel", lambda view: view.finished)


def _pause(server: JobsServer, args: argparse.Namespace) -> int:
    server.pause(args.job)  # type: ignore[attr-defined]
    return _settled(server, args, "pause", lambda view: view.finished or view.status == "paused")


def _resume(server: JobsServer, args: argparse.Namespace) -> int:
    server.resume(args.job)  # type: ignore[attr-defined]
    print(f"{args.job}: {server.view(args.job).status}")
    return 0


def _settled(server: JobsServer, args: argparse.Namespace, sent: str, done: Callable[[JobView], bool]) -> int:
    """After a cancel or pause: wait (unless --no-wait) until the job has stopped, and say its state."""
    if args.no_wait:
        print(f"{args.job}: {sent} sent")
        return 0
    while not done(view := server.view(args.job)):
        time.sleep(0.5)
    print(f"{args.job}: {view.status}")
    return 0


def _artifacts(server: JobsServer, args: argparse.Namespace) -> int:
    for line in server.artifacts(args.job):
        print(line)
    return 0


def _chat(server: JobsServer, args: argparse.Namespace) -> int:
    """Turns from -m, else lines read from stdin until an empty line or end of input; each answer streamed."""
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    scripted = args.message is not None
    turns = iter(args.message) if scripted else _typed_lines()
    for said in turns:
        messages.append({"role": "user", "content": said})
        answer = []
        for text in server.chat(args.model, messages, args.max_tokens, args.temperature):  # type: ignore[attr-defined]
            answer.append(text)
            print(text, end="", flush=True)
        print()
        messages.append({"role": "assistant", "content": "".join(answer)})
    return 0


def _typed_lines() -> Any:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        yield line.strip()


def _train(server: JobsServer, args: argparse.Namespace) -> int:
    job_id = server.submit(args.config)
    print(job_id, flush=True)
    return _watch_job(server, job_id, args) if args.watch else 0


if __name__ == "__main__":
    sys.exit(main())
