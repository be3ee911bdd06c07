"""Supervised fine-tuning on a single device with TRL's SFTTrainer: setup, train, save, cleanup.

The provider runs this file as its own OS process, one per job:

    python -m llama_stack_provider_trl.recipes.sft_training_single_device <job_dir> [--resume]

It reads ``<job_dir>/job.json`` (an SFTJobSpec) and the rows in ``train.jsonl`` (and ``eval.jsonl``), which
the server has already checked and put in one of TRL's SFT formats: ``text``, ``prompt``/``completion``
(strings or messages) or ``messages``. It trains, saves an HF Trainer checkpoint at the end of every epoch
and the final model (``checkpoints/final``; with LoRA the adapter, plus ``checkpoints/final-merged``), each
with its tokenizer and chat template, and reports progress as JSON lines in ``<job_dir>/events.jsonl``,
exactly as the DPO recipe does (recipes/training_process.py holds what they share).

The loss is on the answer only unless the job asks for every token: the completion of prompt/completion
rows (TRL's completion-only loss), the assistant turns of ``messages`` rows (TRL's assistant-only loss;
when TRL has no training template for the model's chat template, each assistant turn becomes its own
prompt/completion row instead, so the same tokens are trained). ``text`` rows train on every token.
"""

import sys
from typing import Any

from transformers import PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from llama_stack_provider_trl.algorithms.sft import SFT_STRINGS, SFTJobSpec
from llama_stack_provider_trl.common.job_rules import no_chat_template
from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE
from llama_stack_provider_trl.recipes import training_process
from llama_stack_provider_trl.recipes.padding_free import (
    enable_packed_attention,
)


class StepLimitedSFTTrainer(training_process.StepLimited, SFTTrainer):
    """SFTTrainer whose epochs end at the request's step limit, with the schedule spanning the steps that run."""


class SFTTrainingSingleDevice(training_process.SingleDeviceRecipe):
    """One SFT job: setup (model, rows, TRL config), then train, save and cleanup (SingleDeviceRecipe)."""

    spec: SFTJobSpec

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        spec = self.spec
        precision, master_weights, tokenizer, [model] = training_process.load_models(spec, "model")
        # TRL packs the rows; the model's attention must stay inside each packed sequence
        packed = training_process.pack_models(
            spec, [model], precision, enable_packed_attention, "packing", "set data_config.packed false"
        )
        compiled_layers = training_process.compile_models([model]) if spec.torch_compile else 0

        train_rows, loss_on = _trainable_rows(training_process.read_jsonl(spec.path / TRAIN_DATA_FILE), tokenizer, spec)
        eval_rows = (
            _trainable_rows(training_process.read_jsonl(spec.path / EVAL_DATA_FILE), tokenizer, spec)[0]
            if spec.num_eval_rows
            else None
        )
        conversational = not isinstance(train_rows[0].get("messages", train_rows[0].get("prompt", "")), str)
        if conversational and tokenizer.chat_template is None:
            raise RuntimeError(no_chat_template(spec.model, SFT_STRINGS))
        # SFT's loss is the mean per-token negative log-likelihood of the trained tokens: its exp is their perplexity
        self.report_progress(model, precision, False, lambda metrics: _perplexity(metrics.get("eval_loss")))

        args = SFTConfig(
            **training_process.trainer_args(spec, precision, packed, evaluates=eval_rows is not None),
            # BFD packing: rows are packed into bins of max_length tokens and each batch runs as one row of real
            # tokens (padding-free), attention kept inside each sequence by the packed attention above
            packing=packed,
            packing_strategy="bfd",
            padding_free=packed,
            completion_only_loss=loss_on in ("completion", "assistant") and "prompt" in train_rows[0],
            assistant_only_loss=loss_on == "assistant" and "messages" in train_rows[0],
        )
        self.build_trainer(
            StepLimitedSFTTrainer,
            tokenizer,
            model=model,
            args=args,
            train_dataset=training_process.rows_dataset(spec, TRAIN_DATA_FILE, train_rows),
            eval_dataset=training_process.rows_dataset(spec, EVAL_DATA_FILE, eval_rows)
            if eval_rows is not None
            else None,
        )
        assert self.trainer is not None
        # Packing changes the number of batch rows (bins of max_length tokens): count them once TRL has packed.
        steps_per_epoch, total_steps = training_process.step_budget(spec, len(self.trainer.train_dataset))
        self.finish_setup(
            steps_per_epoch,
            total_steps,
            packed,
            master_weights,
            train_rows,
            eval_rows,
            precision=precision,
            compiled_layers=compiled_layers,
            loss_on=loss_on,
        )


def _perplexity(eval_loss: float | None) -> float | None:
    return training_process.bounded_exp(eval_loss) if eval_loss is not None else None


def _trainable_rows(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, spec: SFTJobSpec
) -> tuple[list[dict[str, Any]], str]:
    """The rows as TRL will train on them, and which tokens carry the loss: completion, assistant or all."""
    first = rows[0]
    if "text" in first or not spec.completion_only_loss:
        return rows, "all"
    if "prompt" in first:
        return rows, "completion"
    if _has_assistant_masks(tokenizer):
        return rows, "assistant"
    return [turn for row in rows for turn in _assistant_turns(row["messages"])], "assistant"


def _has_assistant_masks(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether TRL can mark the assistant tokens of this tokenizer's chat template (its own generation markers, or
    a training template TRL ships for it)."""
    template = tokenizer.chat_template
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # a template TRL has no training version of
        return False


def _assistant_turns(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One conversational prompt/completion row per assistant message: the conversation before it, and it."""
    return [
        {"prompt": messages[:position], "completion": [message]}
        for position, message in enumerate(messages)
        if message["role"] == "assistant" and position > 0
    ]


def main(argv: list[str]) -> int:
    return training_process.run_recipe(argv, SFTTrainingSingleDevice)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
