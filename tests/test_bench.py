"""The benchmark runs end to end on the CPU and reports the provider/raw TRL ratio (timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

ANCHOR = REPO_ROOT.parent / "shared" / "bench" / "trl_dpo_anchor.py"


@pytest.mark.slow
@pytest.mark.skipif(not ANCHOR.is_file(), reason="the shared anchor workload is not beside this checkout")
def test_bench_compares_provider_and_raw_trl_on_the_same_work(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [sys.executable, "bench/dpo_bench.py", "tiny", "--varlen", "--steps", "8", "--seq", "32", "--reps", "1"]
    command += ["--arms", "provider,raw_trl", "--workdir", str(tmp_path), "--json-out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "provider/raw_trl tokens_per_s ratio:" in result.stdout
    median = json.loads(out.read_text())["median"]
    for arm in ("provider", "raw_trl"):
        assert median[arm]["tokens_per_s"] > 0
        assert 0 < median[arm]["padding_share"] < 1
    # same rows, same settings: both arms pad exactly the same batches
    assert median["provider"]["padding_share"] == median["raw_trl"]["padding_share"]
