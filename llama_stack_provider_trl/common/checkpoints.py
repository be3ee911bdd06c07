"""Where HF Trainer keeps its resumable checkpoints in a job's directory, and which one is the latest.

No torch or transformers import: the server asks this at startup to decide whether an interrupted
job can resume.
"""

import re
from pathlib import Path

from llama_stack_provider_trl.common.job_spec import CHECKPOINTS_DIR  # DPOConfig.output_dir of every job

# peft's: a checkpoint directory holding it is a LoRA adapter, not a full model
ADAPTER_CONFIG_FILE = "adapter_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Trainer writes trainer_state.json last when it saves a checkpoint: without it the save was cut short.
_COMPLETE_MARKER = "trainer_state.json"


def last_trainer_checkpoint(job_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-<step>`` with the highest step, or None."""
    root = Path(job_dir) / CHECKPOINTS_DIR
    try:
        candidates = [
            (int(match.group(1)), path)
            for path in root.iterdir()
            if (match := _CHECKPOINT.match(path.name)) and (path / _COMPLETE_MARKER).is_file()
        ]
    except OSError:
        return None
    return max(candidates)[1] if candidates else None


# The model a finished job leaves: ``final`` (the model, or with LoRA the adapter) and, when the adapter is merged,
# ``final-merged`` (a full model). Their identifiers in the job's record end with the directory's name.
FINAL_DIR = "final"
FINAL_MERGED_DIR = "final-merged"


def final_identifier(job_uuid: str, directory: str) -> str:
    """``<job_uuid>-final`` or ``<job_uuid>-final-merged``: how a final checkpoint is named in the job's record."""
    return f"{job_uuid}-{directory}"


def is_final(identifier: str) -> bool:
    return identifier.endswith((f"-{FINAL_DIR}", f"-{FINAL_MERGED_DIR}"))


def final_model_dir(job_dir: str | Path) -> Path:
    """The full model a completed job trained: ``final-merged`` when the adapter was merged, else ``final``."""
    checkpoints = Path(job_dir) / CHECKPOINTS_DIR
    merged = checkpoints / FINAL_MERGED_DIR
    return merged if merged.is_dir() else checkpoints / FINAL_DIR
