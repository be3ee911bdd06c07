"""Where a DPO step's time goes: torch.profiler over a few steps of a provider job's exact settings.

    python bench/profile_steps.py JOB_DIR [--wait N] [--active N] [--top N] [--json-out PATH]

JOB_DIR is a finished provider job's directory (``job.json``, ``train.jsonl``, ``events.jsonl``; e.g. one a
`dpo_bench.py` run left under ``.bench/*/jobs/``). Builds the same DPOTrainer as the raw-TRL arm
(bench/raw_trl_dpo.py) in the precision the job ran in, skips ``--wait`` steps, profiles ``--active`` steps and
prints:

- wall seconds per step, and on a GPU the share of that time its kernels run (``gpu busy``): far below 100%
  means the step waits on the host (Python and kernel launches, device-to-host syncs), not on the math.
  The profiler adds a little host time to each launch, so both read a little worse than an unprofiled run;
- kernel time by kind (matmul, attention, TRL's fused LM head, optimizer, the rest), kernel launches and
  device-to-host syncs per step;
- the top kernels (GPU) or operators (CPU) by their own time; on a GPU also the top host operators.
"""

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from raw_trl_dpo import build_trainer, job_setup  # bench/ is on the path of a script run from it
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule
from transformers import PrinterCallback, TrainerCallback

# Kernel names by kind, first match wins: FlashAttention/memory-efficient (fmha_cutlass*)/cuDNN attention, TRL's
# Triton LM-head kernels (trl/kernels/chunked_logprob.py), cuBLAS (nvjet*, *gemm*) and CUTLASS GEMMs, the optimizer.
KINDS = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("lm_head (triton)", re.compile(r"^_forward_kernel|^_backward_kernel|logprob", re.I)),
    ("matmul", re.compile(r"nvjet|gemm|cutlass|xmma|cublas|matmul", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor", re.I)),
)
LAUNCHES = re.compile(r"^(cudaLaunchKernel|cuLaunchKernel|cudaLaunchKernelExC|cuLaunchKernelEx)$")
SYNCS = re.compile(r"^(cudaStreamSynchronize|cudaDeviceSynchronize|cudaEventSynchronize)$")


class StepProfiler(TrainerCallback):
    """Advances the profiler's schedule each optimizer step; times the profiled steps (two syncs in all)."""

    def __init__(self, prof: profile, wait: int, active: int) -> None:
        self.prof, self.wait, self.active = prof, wait, active
        self.started: float | None = None
        self.seconds: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.wait + 1:  # warm-up of one step, then the active ones
            self.started = _now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.wait + 1 + self.active:  # before the profiler stops and processes its trace
            self.seconds = _now() - self.started
        self.prof.step()


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def summarize(prof: profile, steps: int, seconds: float, cuda: bool, top: int) -> dict[str, Any]:
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    summary: dict[str, Any] = {"steps": steps, "step_s": seconds / steps}
    if not cuda:
        ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        summary["top"] = [(e.key, e.count / steps, e.self_cpu_time_total / 1e6 / steps) for e in ranked]
        return summary
    # Kernels only: an operator's self device time repeats its kernels', and a GPU-side user annotation
    # (Optimizer.step#...) spans kernels listed on their own.
    kernels = [
        e
        for e in events
        if e.device_type == DeviceType.CUDA and not e.is_user_annotation and e.self_device_time_total > 0
    ]
    host = sorted((e for e in events if e.device_type == DeviceType.CPU), key=lambda e: -e.self_cpu_time_total)
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    by_kind: dict[str, float] = {}
    for e in kernels:
        kind = next((name for name, pattern in KINDS if pattern.search(e.key)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total / 1e6 / steps
    ranked = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:top]
    summary |= {
        "gpu_busy": busy / seconds,
        "kernel_s_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "launches_per_step": sum(e.count for e in events if LAUNCHES.match(e.key)) / steps,
        "syncs_per_step": sum(e.count for e in events if SYNCS.search(e.key)) / steps,
        "top": [(e.key[:90], e.count / steps, e.self_device_time_total / 1e6 / steps) for e in ranked],
        "host_top": [(e.key[:90], e.count / steps, e.self_cpu_time_total / 1e6 / steps) for e in host[:top]],
    }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job_dir", type=Path)
    ap.add_argument("--wait", type=int, default=4, help="steps before profiling (past warm-up and first shapes)")
    ap.add_argument("--active", type=int, default=5, help="steps profiled")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()

    setup = job_setup(a.job_dir)
    trainer, _, padding = build_trainer(a.job_dir)
    trainer.args.max_steps = a.wait + 1 + a.active
    trainer.remove_callback(PrinterCallback)  # one line of metrics per step otherwise
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, schedule=schedule(wait=a.wait, warmup=1, active=a.active)) as prof:
        timer = StepProfiler(prof, a.wait, a.active)
        trainer.add_callback(timer)
        trainer.train()
    summary = summarize(prof, a.active, timer.seconds, cuda, a.top) | {"padding_share": padding.padding_share}

    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"{a.job_dir.name} ({setup['precision']}, padding_free {setup['padding_free']}) on {device}: "
        f"{summary['step_s'] * 1e3:.1f} ms per step over {a.active} steps, padding {padding.padding_share:.0%}"
    )
    if cuda:
        print(
            f"gpu busy {summary['gpu_busy']:.0%}; per step: {summary['launches_per_step']:.0f} kernel launches, "
            f"{summary['syncs_per_step']:.0f} device-to-host syncs"
        )
        for kind, s in summary["kernel_s_by_kind"].items():
            print(f"  {kind:<18}{s * 1e3:9.1f} ms/step")
    print(f"{'top kernels' if cuda else 'top operators'}: calls/step, ms/step")
    for name, calls, s in summary["top"]:
        print(f"  {calls:7.1f} {s * 1e3:9.2f}  {name}")
    if cuda:
        print("top host operators (the time a step spends launching): calls/step, ms/step")
        for name, calls, s in summary["host_top"]:
            print(f"  {calls:7.1f} {s * 1e3:9.2f}  {name}")
    if a.json_out:
        a.json_out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
