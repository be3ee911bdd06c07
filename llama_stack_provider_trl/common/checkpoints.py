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
