"""What a fine-tuned model's checkpoint directory holds, as the generation process loads it: a full model (also a
LoRA job's merged one), or a LoRA adapter over the base model its adapter_config.json names."""

import json
from pathlib import Path

from llama_stack_provider_trl.common.checkpoints import ADAPTER_CONFIG_FILE
from llama_stack_provider_trl.serving.protocol import ModelFiles


def model_files(checkpoint: str | Path) -> ModelFiles:
    directory = Path(checkpoint)
    adapter_config = directory / ADAPTER_CONFIG_FILE
    if not adapter_config.is_file():
        return ModelFiles(base=str(directory))
    base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    return ModelFiles(base=str(base), adapter=str(directory))
