"""The benchmark runs end to end on the CPU, reports the provider/raw TRL ratio (timings are not asserted) and
profiles a job it ran."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from conftest import REPO_ROOT


@pytest.mark.slow
def test_bench_compares_provider_a_variant_raw_trl_and_trl_defaults_then_profiles_a_job(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [sys.executable, "bench/dpo_bench.py", "tiny", "--varlen", "--steps", "8", "--seq", "32", "--reps", "1"]
    command += ["--arms", "provider,packed,raw_trl,trl_defaults", "--variant", "packed=padding_free=true"]
    command += ["--workdir", str(tmp_path), "--json-out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "packed/provider tokens_per_s ratio:" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("provider/raw_trl tokens_per_s ratio:")
    median = json.loads(out.read_text())["median"]
    for arm in ("provider", "packed", "raw_trl"):
        assert median[arm]["tokens_per_s"] > 0
        assert 0 < median[arm]["after_imports_s"] < median[arm]["first_step_s"]
    # same rows, same settings: both arms pad exactly the same batches
    assert 0 < median["provider"]["padding_share"] == median["raw_trl"]["padding_share"] < 1
    assert median["packed"]["padding_share"] == 0  # the variant's override reached its job
    # TRL's defaults, on the same rows in random order and without length grouping: more padding
    assert median["trl_defaults"]["tokens_per_s"] > 0
    assert median["trl_defaults"]["padding_share"] > median["provider"]["padding_share"]

    # profile_steps replays a job the bench left and says where its steps' time goes
    [run] = json.loads(out.read_text())["runs"]["provider"]
    profile = tmp_path / "profile.json"
    command = [sys.executable, "bench/profile_steps.py", run["job_dir"], "--wait", "1", "--active", "2"]
    command += ["--json-out", str(profile)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(profile.read_text())
    assert summary["steps"] == 2 and summary["step_s"] > 0
    assert 0 < summary["padding_share"] < 1  # the job's own padded batches, replayed
    assert any(name.startswith("aten::") for name, _, _ in summary["top"])


def test_profile_summary_splits_kernel_time_by_kind_and_counts_launches_and_syncs(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    from profile_steps import summarize

    def event(key: str, count: int, device_us: float = 0.0, cpu_us: float = 0.0, **kw: object) -> SimpleNamespace:
        fields = {"device_type": DeviceType.CUDA if device_us and not cpu_us else DeviceType.CPU}
        fields |= {"is_user_annotation": False} | kw
        return SimpleNamespace(
            key=key, count=count, self_device_time_total=device_us, self_cpu_time_total=cpu_us, **fields
        )

    events = [
        event("ProfilerStep#5", 2, device_us=90_000),  # spans whole steps: not a kernel
        event("Optimizer.step#AdamW.step", 2, device_us=2_000, is_user_annotation=True),  # spans the optimizer's
        event("aten::mm", 400, device_us=30_000, cpu_us=12_000),  # an operator: its kernels are counted as kernels
        event("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", 400, device_us=30_000),
        event("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", 96, device_us=6_000),
        event("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", 48, device_us=2_000),
        event("_forward_kernel", 8, device_us=4_000),
        event("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", 6, device_us=2_000),
        event("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add>", 900, device_us=8_000),
        event("cudaLaunchKernel", 3000, cpu_us=20_000),
        event("cudaStreamSynchronize", 30, cpu_us=9_000),
    ]
    prof = SimpleNamespace(key_averages=lambda: events)

    summary = summarize(prof, steps=2, seconds=0.1, cuda=True, top=2)

    assert summary["gpu_busy"] == pytest.approx(0.52)  # 52 ms of kernels in 100 ms of wall time
    by_kind = summary["kernel_s_by_kind"]
    assert by_kind == pytest.approx(
        {"matmul": 0.015, "attention": 0.004, "lm_head (triton)": 0.002, "optimizer": 0.001, "other": 0.004}
    )
    assert summary["launches_per_step"] == 1500
    assert summary["syncs_per_step"] == 15
    assert [name for name, _, _ in summary["top"]] == [events[3].key, events[8].key[:90]]
    assert [name for name, _, _ in summary["host_top"]] == ["cudaLaunchKernel", "aten::mm"]


@pytest.mark.slow
def test_sft_bench_runs_the_provider_and_raw_trl_on_the_same_work_and_reports_their_ratio(tmp_path: Path) -> None:
    command = [sys.executable, "bench/sft_bench.py", "--steps", "4", "--bs", "4", "--reps", "1"]
    result = subprocess.run(
        [*command, "--workdir", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1].startswith("provider/raw_trl sft tokens_per_s ratio:")
    assert float(lines[-1].split(":")[1]) > 0
