"""What the A B A B benches (sft_bench.py, grpo_bench.py) share: their arguments, the tests' tiny model, and the
raw TRL arm, run as its own process on the job the provider arm just ran."""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(doc: str | None, name: str, batch_size: int, **more: int) -> argparse.Namespace:
    """--steps, --bs, the bench's own integer options (``more``: name and default), --reps, --workdir, and the raw TRL
    arm's --raw JOB_DIR."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--bs", type=int, default=batch_size)
    for option, default in more.items():
        parser.add_argument(f"--{option}", type=int, default=default)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".bench" / name)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)  # the raw_trl arm's own process
    return parser.parse_args()


def tiny_model(workdir: Path) -> Path:
    """The tests' tiny Llama in ``workdir/model``, built the first time."""
    from llama_stack_provider_trl.demo.tiny_model import build_tiny_model
    from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, corpus

    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, corpus(arithmetic_preferences(24)))
    return model


def run_raw_trl(script: str, job_dir: str | Path, rep: int, results: dict[str, list[dict[str, Any]]]) -> None:
    """The raw TRL arm (``script --raw JOB_DIR``) on the job the provider arm just ran; then the rep's results."""
    command = [sys.executable, script, "--raw", str(job_dir)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    results["raw_trl"].append(json.loads(out.split("RESULT ", 1)[1]))
    for arm in results:
        print(f"rep {rep} {arm:<9} {results[arm][-1]}", flush=True)
