"""Training throughput in real (non-padding) tokens per second, and model FLOPs utilisation on a GPU.

Used live by the recipe (job status) and by the benchmark, so both count the same way: tokens are
TRL's ``num_tokens`` (attention-mask sum of chosen and rejected sequences, prompt included), and a
token costs 2 x matmul-parameters FLOPs per pass: forward + backward (3 passes) for the policy, plus
one forward when a reference model runs during training.
"""

import resource
import time
from typing import Any

import torch

# Dense bf16/fp16 tensor-core peaks, FLOP/s. MFU is only reported for devices listed here.
_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12}
WARMUP_STEPS = 3


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters of every Linear layer, the LM head included (tied or not)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def peak_flops(device: str, precision: str) -> float | None:
    if not device.startswith("cuda") or precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in _PEAK_FLOPS.items() if key in name), None)


def flops_per_token(matmul_params: int, reference_forward: bool) -> float:
    return 2.0 * matmul_params * (3 + (1 if reference_forward else 0))


class ThroughputMeter:
    """Tokens/s since the end of the warm-up steps; MFU when the device's peak is known."""

    def __init__(self, flops_per_token: float, peak_flops: float | None) -> None:
        self._flops_per_token = flops_per_token
        self._peak = peak_flops
        self._start: tuple[float, float] | None = None  # (time, tokens) when warm-up ended
        self.tokens_per_s: float | None = None
        self.mfu: float | None = None

    def update(self, step: int, total_tokens: float, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if step <= WARMUP_STEPS or self._start is None:
            self._start = (now, total_tokens)
            return
        elapsed, tokens = now - self._start[0], total_tokens - self._start[1]
        if elapsed <= 0:
            return
        self.tokens_per_s = tokens / elapsed
        if self._peak:
            self.mfu = self.tokens_per_s * self._flops_per_token / self._peak


class PaddingCounter:
    """Wraps TRL's collator to count the tokens each batch computes: real ones and padding. A packed
    (padding-free) batch computes its real tokens only, whatever its padded layout."""

    def __init__(self, collate: Any, packed: bool = False) -> None:
        self._collate = collate
        self._packed = packed
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        batch = self._collate(examples)
        if not isinstance(batch, dict):  # GRPO collates nothing: its rows are prompts, answers are sampled later
            return batch
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else batch["input_ids"].numel()  # packed by TRL: no mask
        self.real_tokens += real
        self.padded_tokens += real if self._packed or mask is None else mask.numel()
        return batch

    @property
    def padding_share(self) -> float | None:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else None


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
