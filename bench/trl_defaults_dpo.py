"""TRL-defaults arm of the benchmark: what TRL's DPOTrainer gives out of the box on the same model and rows.

    python bench/trl_defaults_dpo.py MODEL_DIR ROWS_JSONL --bs B --steps N --max-length L

Only what the workload fixes is set (batch size, steps, the learning rate and max_length every arm uses, bf16 on
CUDA, the CPU elsewhere); everything else is DPOConfig's default: padded batches in random order, a frozen
reference copy, the model in bf16 on CUDA (fp32 on CPU) without fp32 master weights. Prints one ``RESULT {json}``
line measured as the provider measures itself (llama_stack_provider_trl.recipes.throughput).
"""

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from raw_trl_dpo import Meter, print_result  # bench/ is on the path of a script run from it
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from llama_stack_provider_trl.recipes.throughput import (
    PaddingCounter,
    ThroughputMeter,
    flops_per_token,
    matmul_parameters,
    peak_flops,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("rows", type=Path)
    ap.add_argument("--bs", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--max-length", type=int, required=True)
    ap.add_argument("--workdir", type=Path, default=Path(".bench"))
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=dtype)
    ref_model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=dtype)
    rows = [json.loads(line) for line in a.rows.read_text().splitlines()]
    args = DPOConfig(
        output_dir=str(a.workdir / f"trl-defaults-{time.time_ns()}"),
        per_device_train_batch_size=a.bs,
        max_steps=a.steps,
        learning_rate=1e-6,
        max_length=a.max_length,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=1,  # every step's tokens reach the meter; training is the same
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    device = "cuda" if cuda else "cpu"
    meter = Meter(
        ThroughputMeter(flops_per_token(matmul_parameters(model), reference_forward=True), peak_flops(device, "bf16"))
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(a.model_dir),
        callbacks=[meter],
    )
    padding = PaddingCounter(trainer.data_collator, packed=False)
    trainer.data_collator = padding
    trainer.train()
    print_result(trainer, meter, padding)


if __name__ == "__main__":
    main()
