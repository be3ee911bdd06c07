"""Raw-TRL arm of the benchmark: TRL's DPOTrainer called directly, with the settings a provider job resolved.

    python bench/raw_trl_dpo.py JOB_DIR

Reads the finished provider job's ``job.json``, ``train.jsonl`` and ``events.jsonl`` (the precision,
padding_free and master_weights it resolved) so both arms train the same model on the same rows with the
same settings, then prints one ``RESULT {json}`` line measured the way the provider measures itself
(llama_stack_provider_trl.recipes.throughput). TRL has no working switch for four of those settings, so this arm
takes them from the provider as they are: length grouping of pairs, with ``padding_free`` the packed
forward (llama_stack_provider_trl.recipes.padding_free), with ``master_weights: optimizer`` the optimizer that
holds fp32 copies of a bf16 model's weights (llama_stack_provider_trl.recipes.master_weights), and with
``torch_compile`` the compiled decoder layers (llama_stack_provider_trl.recipes.layer_compile).
"""

import json
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

from llama_stack_provider_trl.recipes.layer_compile import compile_decoder_layers
from llama_stack_provider_trl.recipes.master_weights import use_fp32_master_weights
from llama_stack_provider_trl.recipes.padding_free import enable_padding_free
from llama_stack_provider_trl.recipes.sampling import PairLengthGroupedSampler, pair_lengths
from llama_stack_provider_trl.recipes.throughput import (
    PaddingCounter,
    ThroughputMeter,
    flops_per_token,
    matmul_parameters,
    peak_flops,
    peak_memory_gib,
)

IMPORTED_AT = time.time()  # torch, transformers, TRL and datasets are in: what follows is this run's own work


class PairLengthGroupedDPOTrainer(DPOTrainer):
    """The provider's length grouping (TRL has no switch for it)."""

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return PairLengthGroupedSampler(pair_lengths(self.train_dataset), batch, seed=self.args.seed)


class Meter(TrainerCallback):
    def __init__(self, meter: ThroughputMeter) -> None:
        self.meter = meter
        self.first_step_at: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.first_step_at = self.first_step_at or time.time()
            self.meter.update(state.global_step, float(logs["num_tokens"]))


def job_setup(job_dir: Path) -> dict:
    """The provider job's setup_done event: the precision and packing it resolved and ran with."""
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    [setup] = [e for e in events if e["event"] == "setup_done"]
    return setup


def build_trainer(job_dir: Path) -> tuple[DPOTrainer, Meter, PaddingCounter]:
    """DPOTrainer with the settings of the provider job in ``job_dir``, its throughput meter and padding counter."""
    spec = json.loads((job_dir / "job.json").read_text())
    setup = job_setup(job_dir)
    precision, packed = setup["precision"], setup["padding_free"]
    masters_in_optimizer = setup.get("master_weights") == "optimizer"
    rows = [json.loads(line) for line in (job_dir / "train.jsonl").read_text().splitlines()]
    cuda = spec["device"].startswith("cuda")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=half if masters_in_optimizer else torch.float32)
    ref_model = None
    if spec["reference_strategy"] == "frozen_copy":
        ref_model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=half)
    for each in (model, ref_model) if ref_model is not None else (model,):
        if packed:
            enable_padding_free(each, spec["max_seq_length"])
        if setup.get("compiled_layers"):
            compile_decoder_layers(each)
    sampling = "group_by_length" if spec["shuffle"] and spec["group_by_length"] else "random"
    if not spec["shuffle"]:
        sampling = "sequential"
    args = DPOConfig(
        output_dir=str(job_dir / "raw_trl_state"),
        seed=spec["seed"],
        beta=spec["beta"],
        loss_type=spec["loss_types"],
        loss_weights=spec["loss_weights"],
        num_train_epochs=spec["n_epochs"],
        max_steps=spec["max_steps_per_epoch"] * spec["n_epochs"] if spec["max_steps_per_epoch"] else -1,
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=spec["gradient_accumulation_steps"],
        learning_rate=spec["learning_rate"],
        weight_decay=spec["weight_decay"],
        warmup_steps=spec["warmup_steps"],
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        max_length=spec["max_seq_length"],
        pad_to_multiple_of=None if packed else spec["pad_to_multiple_of"],
        precompute_ref_log_probs=spec["reference_strategy"] == "precomputed_log_probs",
        gradient_checkpointing=spec["gradient_checkpointing"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        train_sampling_strategy=sampling,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    flops = flops_per_token(matmul_parameters(model), reference_forward=ref_model is not None)
    meter = Meter(ThroughputMeter(flops, peak_flops(spec["device"], precision)))
    trainer = PairLengthGroupedDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[meter],
    )
    if masters_in_optimizer:
        use_fp32_master_weights(trainer)
    padding = PaddingCounter(trainer.data_collator, packed=packed)
    trainer.data_collator = padding
    return trainer, meter, padding


def main(job_dir: Path) -> None:
    trainer, meter, padding = build_trainer(job_dir)
    trainer.train()
    print_result(trainer, meter, padding)


def print_result(trainer: DPOTrainer, meter: Meter, padding: PaddingCounter) -> None:
    """The ``RESULT {json}`` line of a benchmark arm that ran ``trainer``, for dpo_bench.py to read."""
    result = {
        "tokens_per_s": meter.meter.tokens_per_s,
        "mfu": meter.meter.mfu,
        "padding_share": padding.padding_share,
        "first_step_at": meter.first_step_at,
        "after_imports_s": meter.first_step_at - IMPORTED_AT,
        "peak_memory_gib": peak_memory_gib(str(trainer.args.device)),  # whole process, as the provider reports it
        "final_loss": trainer.state.log_history[-2].get("loss") if len(trainer.state.log_history) > 1 else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
