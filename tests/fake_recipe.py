"""A recipe that speaks the real one's protocol (job.json in, events.jsonl out, exit code) without torch.

It starts in well under a second instead of the real recipe's seconds of torch/TRL imports, so
JobManager's own tests (test_job_manager.py) can run many jobs: ``JobManager(recipe_module="fake_recipe")``
with tests/ on PYTHONPATH. Each step sleeps ``TRL_FAKE_STEP_S`` seconds (default 0.05); it writes a
marker file per launch, so a test can count how often a job really ran. With ``TRL_FAKE_BAD_EVENTS`` set it
writes lines that are not events after its first step. With ``TRL_FAKE_LINGER_S`` it stays that many seconds
after reporting completion, deaf to SIGTERM, as a process that is still tearing down.
"""

import json
import math
import os
import signal
import sys
import time

from llama_stack_provider_trl.algorithms.dpo import DPOJobSpec
from llama_stack_provider_trl.common.events import (
    CheckpointSaved,
    Completed,
    EventWriter,
    Failed,
    Metrics,
    SetupDone,
    Started,
)
from llama_stack_provider_trl.common.job_spec import CHECKPOINTS_DIR, EVENTS_FILE
from llama_stack_provider_trl.common.parent_watch import die_with_parent
from llama_stack_provider_trl.common.recipe_process import STANDBY_FLAG, wait_for_job
from llama_stack_provider_trl.common.storage_errors import describe_write_error

LAUNCHES_FILE = "launches.txt"


def main(argv: list[str]) -> int:
    die_with_parent()
    if argv[1:] == [STANDBY_FLAG]:
        job_argv = wait_for_job(argv[0])
        if job_argv is None:
            return 0
        argv = job_argv
    spec = DPOJobSpec.read(argv[1])
    with (spec.path / LAUNCHES_FILE).open("a") as f:
        f.write(f"{os.getpid()} {time.time()} {' '.join(argv[2:])}\n")
    events = EventWriter(spec.path / EVENTS_FILE)
    events.emit(Started())
    per_epoch = spec.max_steps_per_epoch or math.ceil(spec.num_rows / spec.batch_size)
    total = per_epoch * spec.n_epochs
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or None  # what torch would run, as the real one reports
    events.emit(
        SetupDone(
            device=spec.device, cpu_threads=threads, precision="fp32", total_steps=total, steps_per_epoch=per_epoch
        )
    )
    step_s = float(os.environ.get("TRL_FAKE_STEP_S", "0.05"))
    for step in range(1, total + 1):
        time.sleep(step_s)
        print(f"step {step}/{total}", flush=True)
        epoch = math.ceil(step / per_epoch)
        events.emit(Metrics(step=step, total_steps=total, epoch=epoch, metrics={"loss": 1.0 / step}))
        if step == 1 and os.environ.get("TRL_FAKE_BAD_EVENTS"):  # what a torn or foreign write leaves behind
            with (spec.path / EVENTS_FILE).open("a") as f:
                f.write('{not json\n{"event": "metrics", "step": 2}\n{"event": "no-such-event"}\n')
    path = spec.path / CHECKPOINTS_DIR / "final"
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"fake": True}))
    except OSError as exc:
        events.emit(Failed(error=f"saving the model failed: {describe_write_error(exc.filename or path, exc)}"))
        return 1
    events.emit(
        CheckpointSaved(
            identifier=f"{spec.job_uuid}-final", epoch=spec.n_epochs, step=total, path=str(path), train_loss=0
        )
    )
    linger_s = float(os.environ.get("TRL_FAKE_LINGER_S", "0"))
    if linger_s:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    events.emit(Completed())
    time.sleep(linger_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
