"""The real DPO recipe, saving a resumable Trainer checkpoint at the end of every epoch.

Until the recipe saves per-epoch checkpoints itself, this is how a server (and the restart tests) gets
jobs that can resume: ``recipe_module: llama_stack_provider_trl.demo.epoch_checkpoint_recipe``.
Checkpoints land in ``<job_dir>/trainer_state/checkpoint-<step>/``, where resume looks for them.
"""

import sys
from typing import Any

from llama_stack_provider_trl.recipes import dpo_training_single_device as recipe

_DPOConfig = recipe.DPOConfig


def _saving_every_epoch(*args: Any, **kwargs: Any) -> Any:
    return _DPOConfig(*args, **{**kwargs, "save_strategy": "epoch", "save_total_limit": 2})


if __name__ == "__main__":
    recipe.DPOConfig = _saving_every_epoch
    sys.exit(recipe.main(sys.argv))
