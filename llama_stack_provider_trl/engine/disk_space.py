"""How much room a job's directory has: said in a failed job's error when its disk is full, and estimated before a
job is accepted: its checkpoints (from the model's safetensors headers: no weights are read), its copied data, its log
and events, and what the jobs accepted before it, queued or running, have still to write on the same disk."""

import json
import math
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from llama_stack_provider_trl.common.job_spec import CHECKPOINTS_DIR, EVENTS_FILE, LOG_FILE, JobSpecBase

# A disk with less free space than this cannot take even a training process's log lines and events: a job that
# fails there failed because of it, whatever it managed to report.
NEARLY_FULL_BYTES = 1 << 20
# How a full disk reads once it has crossed a process boundary or a library written in another language
# (safetensors reports "os error 28").
_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|os error 28|Errno 28|ENOSPC", re.IGNORECASE)
_ADAM_STATE_BYTES = 8  # two fp32 moments per trained parameter
_TRAINER_STATE_BYTES = 64 << 10  # an epoch checkpoint's scheduler, RNG and trainer state, training arguments
_NOT_LORA_TARGETS = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out")  # peft's all-linear leaves them out
_LOG_BYTES = 256 << 10  # a job's log before its first step: imports, warnings, the model and data loaded
_LOGGED_STEP_BYTES = 2 << 10  # each logged step: its metrics event, progress lines in the log, a tracker's record


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


def estimate_checkpoints(spec: JobSpecBase) -> CheckpointEstimate | None:
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
    kept = kept_epoch_checkpoints(spec)
    if kept and spec.save_total_limit is not None and kept == spec.save_total_limit:
        kept += 1  # Trainer saves a new epoch checkpoint before it deletes the oldest beyond save_total_limit
    return CheckpointEstimate(
        epoch_checkpoints=kept,
        epoch_checkpoint_bytes=saved + optimizer + side_files + _TRAINER_STATE_BYTES,
        final_bytes=final + side_files,
    )


@dataclass(frozen=True)
class RoomNeeded:
    """What accepting a job takes on its disk: its own files to come, and what the unfinished jobs accepted before
    it (queued, paused, running) have still to write there."""

    checkpoints: CheckpointEstimate | None  # None: its model's size is not known here (a Hub id)
    data_bytes: int
    log_bytes: int
    others_bytes: int
    others: int

    @property
    def total(self) -> int:
        own = self.checkpoints.total if self.checkpoints else 0
        return own + self.data_bytes + self.log_bytes + self.others_bytes

    def describe(self) -> str:
        parts = [f"checkpoints {self.checkpoints.describe()}" if self.checkpoints else "checkpoints not estimated"]
        parts.append(f"its data {format_bytes(self.data_bytes)}, log and events {format_bytes(self.log_bytes)}")
        if self.others:
            plural = "s" if self.others > 1 else ""
            parts.append(f"{format_bytes(self.others_bytes)} still to come from {self.others} unfinished job{plural}")
        return "; ".join(parts)


def room_needed(spec: JobSpecBase, data_bytes: int, unfinished: list[JobSpecBase]) -> RoomNeeded:
    """What ``spec`` (whose rows take ``data_bytes`` as JSONL) needs on a disk that ``unfinished`` jobs share."""
    others = [other for other in unfinished if other.job_uuid != spec.job_uuid]
    return RoomNeeded(
        checkpoints=estimate_checkpoints(spec),
        data_bytes=data_bytes,
        log_bytes=_log_bytes(spec),
        others_bytes=sum(_still_to_write(other) for other in others),
        others=len(others),
    )


def jsonl_bytes(rows: list[dict[str, object]]) -> int:
    """The size of ``rows`` written one JSON object a line."""
    return sum(len(json.dumps(row).encode()) + 1 for row in rows)


def total_steps(spec: JobSpecBase) -> int:
    """The most optimizer steps the job takes (packed SFT rows may take fewer)."""
    per_epoch = math.ceil(spec.num_rows / (spec.batch_size * spec.gradient_accumulation_steps))
    if spec.max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, spec.max_steps_per_epoch)
    return spec.n_epochs * per_epoch


def kept_epoch_checkpoints(spec: JobSpecBase) -> int:
    """Epoch checkpoints the job keeps once done (save_total_limit deletes the oldest beyond it)."""
    if not spec.save_every_epoch:
        return 0
    return spec.n_epochs if spec.save_total_limit is None else min(spec.n_epochs, spec.save_total_limit)


def _log_bytes(spec: JobSpecBase) -> int:
    return _LOG_BYTES + math.ceil(total_steps(spec) / spec.logging_steps) * _LOGGED_STEP_BYTES


def _still_to_write(spec: JobSpecBase) -> int:
    """An unfinished job's checkpoints, log and events, less what its directory holds already."""
    estimate = estimate_checkpoints(spec)
    checkpoints = max((estimate.total if estimate else 0) - _bytes_under(spec.path / CHECKPOINTS_DIR), 0)
    logs = max(_log_bytes(spec) - sum(_bytes_under(spec.path / name) for name in (LOG_FILE, EVENTS_FILE)), 0)
    return checkpoints + logs


def _bytes_under(path: Path) -> int:
    """The size of a file, or of every file under a directory; 0 for nothing there."""
    if path.is_file():
        try:
            return path.stat().st_size
        except OSError:
            return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # deleted meanwhile (Trainer rotating checkpoints)
                continue
    return total


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
