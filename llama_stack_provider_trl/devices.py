"""Which device a job trains on, and in what precision.

The server picks the device at request time (so a wrong one is a 400, not a failed job) without
creating a CUDA context of its own; the training process resolves ``auto`` precision on the device
it actually holds.
"""

import functools

import torch

from llama_stack_provider_trl.job_spec import Precision


@functools.cache
def _cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(configured: str) -> str:
    """Map the configured device (auto, cpu, mps, cuda, cuda:N) to one that exists here, or raise ValueError."""
    if configured == "auto":
        if _cuda_device_count():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if configured.startswith("cuda"):
        count = _cuda_device_count()
        index = int(configured.split(":", 1)[1]) if ":" in configured else 0
        if index >= count:
            raise ValueError(f"device '{configured}' is not available: this machine has {count} CUDA device(s)")
    if configured == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available on this machine")
    return configured


def check_precision(device: str, precision: Precision) -> None:
    """Raise ValueError for a precision the device cannot train in (known before any process starts)."""
    if precision == "fp16" and device == "cpu":
        raise ValueError("fp16 mixed precision needs a GPU; on CPU use bf16 or fp32")


def resolve_auto_precision(device: str) -> Precision:
    """bf16 where the device supports it, fp16 on an accelerator that lacks it, fp32 on CPU."""
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "bf16" if torch.backends.mps.is_macos_or_newer(14, 0) else "fp16"
    return "fp32"
