"""Reinforcement fine-tuning with TRL's GRPOTrainer on one device (or one rank of several): setup, train, save,
cleanup.

The provider runs this file as its own OS process, one per job:

    python -m llama_stack_provider_trl.recipes.grpo_training_single_device <job_dir> [--resume]

It reads ``<job_dir>/job.json`` (a GRPOJobSpec) and the prompts in ``train.jsonl`` (and ``eval.jsonl``), one row a
prompt: ``{"prompt": [messages ending with the user's turn], "item": {the line's other fields}}``. For each prompt
GRPOTrainer samples ``num_generations`` answers, the job's grader scores each answer against the row's ``item``
(the reward), and the policy moves toward the answers that scored above their group's mean. Checkpoints, the final
model, pause, resume and progress events are the other recipes' (recipes/training_process.py); each step's metrics
event carries the rewards (mean, spread, each sub-grader's mean, KL, answer length, clipped share), and with a
validation file an evaluation every ``eval_steps`` steps carries the validation prompts' mean reward.

The grader is compiled into TRL's reward function (llama_stack_provider_trl.graders), which grades a step's answers
concurrently (a model grader's requests in flight together, a python grader's warm sandbox processes); TRL itself
waits for the rewards before it computes the advantages, so grading is on the step's path, not overlapped with it.
"""

import json
import sys

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from llama_stack_provider_trl.algorithms import grpo
from llama_stack_provider_trl.algorithms.grpo import PROMPT_STRINGS, GRPOJobSpec
from llama_stack_provider_trl.common.job_rules import no_chat_template
from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE
from llama_stack_provider_trl.graders import ITEM_COLUMN, reward_function
from llama_stack_provider_trl.recipes import training_process

# What GRPOConfig lacks of the arguments every recipe shares: answers are sampled up to max_completion_length (no
# max_length), and generation keeps no activations to offload.
_NOT_GRPO_ARGS = ("max_length", "activation_offloading")


class StepLimitedGRPOTrainer(training_process.StepLimited, GRPOTrainer):
    """GRPOTrainer whose epochs end at the request's step limit, with the schedule spanning the steps that run."""


class GRPOTrainingSingleDevice(training_process.SingleDeviceRecipe):
    """One reinforcement job: setup (model, prompts, grader, TRL config), then train, save and cleanup."""

    spec: GRPOJobSpec

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        spec = self.spec
        precision, master_weights, tokenizer, [model] = training_process.load_models(spec, "model")
        if tokenizer.chat_template is None:
            raise RuntimeError(no_chat_template(spec.model, PROMPT_STRINGS))
        compiled_layers = training_process.compile_models([model]) if spec.torch_compile else 0
        train_dataset = _prompts(spec, TRAIN_DATA_FILE)
        eval_dataset = _prompts(spec, EVAL_DATA_FILE) if spec.num_eval_rows else None
        per_step = spec.batch_size * spec.gradient_accumulation_steps
        steps_per_epoch = grpo.steps_per_epoch(len(train_dataset), per_step, spec.max_steps_per_epoch)
        total_steps = steps_per_epoch * spec.n_epochs
        self.report_progress(model, precision, spec.beta > 0, lambda _: None)

        shared = training_process.trainer_args(spec, precision, packed=False, evaluates=eval_dataset is not None)
        for name in _NOT_GRPO_ARGS:
            del shared[name]
        prompts_per_rank = spec.batch_size // spec.num_processes
        args = GRPOConfig(
            **{
                **shared,
                # TRL's batch counts answers: each prompt of the step brings its group of num_generations
                "per_device_train_batch_size": prompts_per_rank * spec.num_generations,
                "per_device_eval_batch_size": max(prompts_per_rank, 1) * spec.num_generations_eval,
                "eval_strategy": "steps" if eval_dataset is not None else "no",
                "eval_steps": spec.eval_steps,
            },
            shuffle_dataset=spec.shuffle,
            num_generations=spec.num_generations,
            num_generations_eval=spec.num_generations_eval,
            max_completion_length=spec.max_completion_length,
            temperature=spec.temperature,
            top_p=spec.top_p,
            beta=spec.beta,
            loss_type=spec.loss_type,
            chat_template_kwargs=spec.chat_template_kwargs or None,
        )
        self.build_trainer(
            StepLimitedGRPOTrainer,
            tokenizer,
            model=model,
            reward_funcs=[reward_function(spec.grader, spec.grader_settings)],
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
        )
        self.finish_setup(
            steps_per_epoch,
            total_steps,
            False,
            master_weights,
            train_dataset,
            eval_dataset,
            precision=precision,
            compiled_layers=compiled_layers,
        )


def _prompts(spec: GRPOJobSpec, name: str) -> Dataset:
    """The prompts as TRL reads them: ``prompt`` (messages) and the item as JSON text, so items of different shapes
    share one column, which TRL hands the reward function."""
    rows = [
        {"prompt": row["prompt"], ITEM_COLUMN: json.dumps(row["item"])}
        for row in training_process.read_jsonl(spec.path / name)
    ]
    return training_process.rows_dataset(spec, name, rows)


def main(argv: list[str]) -> int:
    return training_process.run_recipe(argv, GRPOTrainingSingleDevice)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
