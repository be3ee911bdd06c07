"""How much room a job's directory has: said in a failed job's error when its disk is full, and estimated before a
job is accepted (its checkpoints, from the model's safetensors headers: no weights are read)."""

import json
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from llama_stack_provider_trl.common.job_spec import DPOJobSpec

# A disk with less free space than this cannot take even a training process's log lines and events: a job that
# fails there failed because of it, whatever it managed to report.
NEARLY_FULL_BYTES = 1 << 20
# How a full disk reads once it has crossed a process boundary or a library written in another language
# (safetensors reports "os error 28").
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|os error 28|Errno 28|ENOSPC", re.IGNORECASE)
_ADAM_STATE_BYTES = 8  # two fp32 moments per trained parameter
_TRAINER_STATE_BYTES = 64 << 10  # an epoch checkpoint's scheduler, RNG and trainer state, training arguments
_NOT_LORA_TARGETS = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out")  # peft's all-linear leaves them out


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(size: int) -> str:
    power = min(int(math.log(max(size, 1), 1024)), len(_UNITS) - 1)
    return f"{size} B" if power == 0 else f"{size / 1024**power:.1f} {_UNITS[power]}"


def disk_space(path: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding ``path`` (its nearest existing ancestor); None if unknown."""
    for candidate in (path, *path.parents):
        try:
            usage = shutil.disk_usage(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return usage.free, usage.total
    return None


def explain_full_disk(job_dir: Path, error: str) -> str:
    """``error``, led by what a full disk did to the job when the disk holding ``job_dir`` is full: a training
    process that cannot write even its events fails without saying why, or in another library's words."""
    space = disk_space(job_dir)
    if space is None:
        return error
    free, total = space
    if free >= NEARLY_FULL_BYTES and not _NO_SPACE.search(error):
        return error
    return (
        f"the disk holding {job_dir} is full ({format_bytes(free)} free of {format_bytes(total)}); free some space "
        f"there or point output_dir at a larger disk. {error}"
    )


@dataclass(frozen=True)
class CheckpointEstimate:
    """Bytes a job's checkpoints take at their peak: the epoch checkpoints kept at once, plus the final model."""

    epoch_checkpoints: int
    epoch_checkpoint_bytes: int
    final_bytes: int

    @property
    def total(self) -> int:
        return self.epoch_checkpoints * self.epoch_checkpoint_bytes + self.final_bytes

    def describe(self) -> str:
        final = f"final model {format_bytes(self.final_bytes)}"
        if not self.epoch_checkpoints:
            return final
        plural = "s" if self.epoch_checkpoints > 1 else ""
        return (
            f"{self.epoch_checkpoints} epoch checkpoint{plural} of {format_bytes(self.epoch_checkpoint_bytes)} "
            f"with optimizer state, {final}"
        )


def estimate_checkpoints(spec: DPOJobSpec) -> CheckpointEstimate | None:
    """What ``spec``'s checkpoints will take on disk; None when its model's files are not a local directory with
    safetensors weights (a Hub id, or .bin weights), so nothing can be said before it runs."""
    model_dir = Path(spec.model)
    shapes = _tensor_shapes(model_dir) if model_dir.is_dir() else None
    if not shapes:
        return None
    parameters = sum(math.prod(shape) for shape in shapes.values())
    side_files = sum(  # config, tokenizer, chat template: copied into every checkpoint
        f.stat().st_size for f in model_dir.iterdir() if f.is_file() and f.suffix not in (".safetensors", ".bin")
    )
    # The recipe's trained weights are fp32, or bf16 when the optimizer holds the fp32 master copies.
    weight_bytes = 2 if spec.master_weights == "optimizer" and spec.lora is None else 4
    if spec.lora is None:
        trained, saved = parameters, parameters * weight_bytes
        final = saved
    else:
        trained = _lora_parameters(shapes, spec.lora.rank, spec.lora.target_modules)
        saved = trained * 4  # adapters train in fp32
        final = saved
        if spec.lora.merge_adapter:  # the merged model: the base's weights in its training dtype
            final += parameters * (4 if spec.device == "cpu" else 2)
    optimizer = 0 if spec.optimizer == "sgd" else trained * _ADAM_STATE_BYTES
    kept = 0
    if spec.save_every_epoch:
        # Trainer saves a new epoch checkpoint before it deletes the oldest beyond save_total_limit.
        kept = spec.n_epochs if spec.save_total_limit is None else min(spec.n_epochs, spec.save_total_limit + 1)
    return CheckpointEstimate(
        epoch_checkpoints=kept,
        epoch_checkpoint_bytes=saved + optimizer + side_files + _TRAINER_STATE_BYTES,
        final_bytes=final + side_files,
    )


def _tensor_shapes(model_dir: Path) -> dict[str, list[int]] | None:
    """Every weight tensor's shape, from the safetensors headers (the first bytes of each file)."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for name, entry in header.items():
            if name != "__metadata__":
                shapes[name] = entry["shape"]
    return shapes


def _lora_parameters(shapes: dict[str, list[int]], rank: int, targets: list[str] | str) -> int:
    """LoRA's A and B matrices: rank x (in + out) per adapted linear layer."""
    total = 0
    for name, shape in shapes.items():
        if len(shape) != 2 or not name.endswith(".weight"):
            continue
        module = name.removesuffix(".weight")
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in _NOT_LORA_TARGETS if targets == "all-linear" else leaf in targets:
            total += rank * (shape[0] + shape[1])
    return total
