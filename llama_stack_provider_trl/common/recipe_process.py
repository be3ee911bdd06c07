"""How the server starts a training process: the recipe's command line, and the standby handoff.

A fresh launch is ``python -m <recipe> <job_dir> [--resume]``. A standby process is a training process started
ahead of its job, so a job does not wait for torch, transformers and TRL to import.

The server keeps one recipe process in standby: ``python -m <recipe> --standby`` imports everything, then
blocks on its stdin. When a job starts, the server writes one JSON line there (the job directory and the
recipe's arguments) and closes the pipe; the process moves into the job directory, sends its output to the
job's log and runs the job exactly as a freshly started ``python -m <recipe> <job_dir>`` would. A closed
pipe with no job means the server no longer needs it: it exits.
"""

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llama_stack_provider_trl.common.job_spec import LOG_FILE

STANDBY_FLAG = "--standby"
RESUME_FLAG = "--resume"  # continue from the job's last complete Trainer checkpoint
# What sets the CPU threads of torch in a training process (the server sets them: engine/cpu_threads.py)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def handoff_line(job_dir: Path, args: Sequence[str]) -> bytes:
    """What the server writes to a standby process to give it a job."""
    return json.dumps({"job_dir": str(job_dir), "args": args}).encode() + b"\n"


def wait_for_job(program: str) -> list[str] | None:
    """Block until the server hands over a job; return the argv to run it with, or None when there is none."""
    line = sys.stdin.readline()
    if not line.strip():
        return None
    handoff = json.loads(line)
    job_dir = Path(handoff["job_dir"])
    os.chdir(job_dir)  # as a fresh launch runs; the server also recognises its processes by it after a crash
    log = os.open(job_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return [program, str(job_dir), *handoff["args"]]
