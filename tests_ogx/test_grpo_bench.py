"""The GRPO benchmark runs end to end on the CPU and reports the provider/raw TRL ratio (timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_grpo_bench_runs_an_rft_job_and_raw_grpo_on_the_same_work_and_reports_their_ratio(tmp_path: Path) -> None:
    command = [sys.executable, "bench/grpo_bench.py", "--steps", "5", "--reps", "1", "--workdir", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1].startswith("provider/raw_trl grpo completion_tokens_per_s ratio:")
    assert float(lines[-1].split(":")[1]) > 0
