"""What both demos share: where they keep their state, and the LoRA DPO job they run."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("TRL_DEMO_DIR", REPO_ROOT / ".demo"))
# Per-job overrides of the provider config. One epoch, so no epoch checkpoint besides the final one.
LORA = {
    "use_lora": True,
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "merge_adapter": True,
    "save_every_epoch": False,
    "dpo_loss_type": ["sigmoid", "sft"],  # RPO: the SFT term keeps the chosen answers likely, so answers stay right
    "loss_weights": [1.0, 1.0],
}
# 6 steps of 4 pairs: a step takes seconds on 2 CPU cores (half a minute when they are shared), and the
# held-out margins have long flipped by then.
TRAINING = {"n_epochs": 1, "max_steps_per_epoch": 6, "batch_size": 4, "lr": 5e-4}
SAMPLE_ANSWERS = 6
