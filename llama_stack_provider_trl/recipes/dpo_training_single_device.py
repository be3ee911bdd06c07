"""DPO with TRL's DPOTrainer on one device (or one rank of several): setup, train, save, cleanup.

The provider runs this file as its own OS process, one per job:

    python -m llama_stack_provider_trl.recipes.dpo_training_single_device <job_dir> [--resume]

It reads ``<job_dir>/job.json`` (a DPOJobSpec) and the rows in ``train.jsonl`` (and ``eval.jsonl``),
trains, saves an HF Trainer checkpoint at the end of every epoch (``checkpoints/checkpoint-<step>``) and
the final model (``checkpoints/final``; with LoRA the adapter, plus ``checkpoints/final-merged`` when
asked), each with its tokenizer and chat template, and reports progress as JSON lines in
``<job_dir>/events.jsonl``. Exit code 0 means completed; anything else means failed, with the reason in
the last event. ``--resume`` continues from the newest complete checkpoint, if there is one. When the server asks
for a pause (``<job_dir>/pause.request``), the recipe saves a resumable checkpoint after its current step and
exits 0 after a ``paused`` event.
``--standby`` imports everything and waits for the server to hand it a job (common/recipe_process.py).

A job of several processes runs this same file once per rank under ``accelerate launch`` (engine/launch.py):
each rank trains on its share of the global batch, only rank 0 writes events, Trainer saves checkpoints once.
"""

import sys

from datasets import Dataset
from torch.utils.data import Sampler, SequentialSampler
from trl import DPOConfig, DPOTrainer

from llama_stack_provider_trl.algorithms.dpo import PREFERENCE_STRINGS, DPOJobSpec
from llama_stack_provider_trl.common.events import EventWriter
from llama_stack_provider_trl.common.job_rules import no_chat_template
from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE
from llama_stack_provider_trl.recipes import training_process
from llama_stack_provider_trl.recipes.padding_free import (
    enable_padding_free,
)
from llama_stack_provider_trl.recipes.sampling import PairLengthGroupedSampler, pair_lengths


class DPOTrainingSingleDevice(training_process.SingleDeviceRecipe):
    """One DPO job: setup (models, data, TRL config), then train, save and cleanup (SingleDeviceRecipe)."""

    spec: DPOJobSpec

    def __init__(self, spec: DPOJobSpec, events: EventWriter) -> None:
        super().__init__(spec, events)
        self._eval_chosen_tokens_per_row: float | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        spec = self.spec
        # frozen_copy: a second copy scores the reference. adapters_disabled (LoRA) and precomputed_log_probs keep
        # no second copy (see ReferenceStrategy).
        frozen_copy = spec.reference_strategy == "frozen_copy"
        precision, master_weights, tokenizer, models = training_process.load_models(
            spec, "finetuned_model", frozen_copy
        )
        model, ref_model = models[0], (models[1] if frozen_copy else None)
        packed = training_process.pack_models(
            spec, models, precision, enable_padding_free, "padding_free", "set padding_free: false (or auto)"
        )
        compiled_layers = training_process.compile_models(models) if spec.torch_compile else 0

        train_dataset = training_process.rows_dataset(spec, TRAIN_DATA_FILE)
        eval_dataset = training_process.rows_dataset(spec, EVAL_DATA_FILE) if spec.num_eval_rows else None
        if _is_conversational(train_dataset) and tokenizer.chat_template is None:
            raise RuntimeError(no_chat_template(spec.model, PREFERENCE_STRINGS))
        steps_per_epoch, total_steps = training_process.step_budget(spec, len(train_dataset))
        reference_forward = spec.reference_strategy != "precomputed_log_probs"
        self.report_progress(model, precision, reference_forward, self._perplexity)

        args = DPOConfig(
            **training_process.trainer_args(spec, precision, packed, evaluates=eval_dataset is not None),
            beta=spec.beta,
            loss_type=spec.loss_types,
            loss_weights=spec.loss_weights,
            precompute_ref_log_probs=spec.reference_strategy == "precomputed_log_probs",
        )
        self.build_trainer(
            StepLimitedDPOTrainer,
            tokenizer,
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
        )
        if self.trainer.eval_dataset is not None:
            self._eval_chosen_tokens_per_row = _mean_chosen_tokens(self.trainer.eval_dataset, spec.max_seq_length)
        self.finish_setup(
            steps_per_epoch,
            total_steps,
            packed,
            master_weights,
            train_dataset,
            eval_dataset,
            precision=precision,
            compiled_layers=compiled_layers,
        )

    def _perplexity(self, metrics: dict[str, float]) -> float | None:
        """Per-token perplexity of the validation set's chosen answers: TRL reports their summed log-prob per row."""
        chosen_logps = metrics.get("eval_logps/chosen")
        if chosen_logps is None or not self._eval_chosen_tokens_per_row:
            return None
        return training_process.bounded_exp(-chosen_logps / self._eval_chosen_tokens_per_row)


class StepLimitedDPOTrainer(training_process.StepLimited, DPOTrainer):
    """DPOTrainer with its epochs ending at the request's step limit, the schedule spanning the steps that run
    (StepLimited), and length grouping that batches preference pairs of similar length (PairLengthGroupedSampler)
    in training only."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return PairLengthGroupedSampler(pair_lengths(self.train_dataset), batch, seed=self.args.seed)

    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        return SequentialSampler(eval_dataset)  # Trainer would length-group it too, and fail on TRL's columns


def _is_conversational(dataset: Dataset) -> bool:
    return isinstance(dataset[0]["chosen"], list)


def _mean_chosen_tokens(tokenized: Dataset, max_length: int) -> float:
    """Mean number of chosen-answer tokens TRL scores per row (prompt + answer are cut at max_length)."""
    counts = [
        max(min(len(prompt) + len(chosen), max_length) - len(prompt), 0)
        for prompt, chosen in zip(tokenized["prompt_ids"], tokenized["chosen_ids"], strict=True)
    ]
    return max(sum(counts) / len(counts), 1.0)


def main(argv: list[str]) -> int:
    return training_process.run_recipe(argv, DPOTrainingSingleDevice)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
