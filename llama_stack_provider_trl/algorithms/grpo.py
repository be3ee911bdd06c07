"""GRPO: reinforcement fine-tuning with TRL's GRPOTrainer (recipes/grpo_training_single_device.py), the grader
(graders/) as its reward function.

Its request fields (``GRPORequest``: the grader, compute_multiplier, validation, reasoning effort), its checks, its job
spec (``GRPOJobSpec``), its prompt rows (grpo_rows.py), the metrics it logs (rewards, their spread, per-grader
rewards, KL, completion length, clipped share) and how a status shows its settings.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from llama_stack_provider_trl.algorithms.algorithm import Algorithm, MetricNames, TrainingRows
from llama_stack_provider_trl.algorithms.grpo_rows import check_prompt_rows
from llama_stack_provider_trl.common.job_spec import JobSpecBase
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.curves import Panel
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, MethodRequest, RequestSources
from llama_stack_provider_trl.engine.model_files import chat_template
from llama_stack_provider_trl.engine.training_data import checked_rows
from llama_stack_provider_trl.engine.values import number, positive_int
from llama_stack_provider_trl.graders import GraderSettings, compile_grader

PROMPT_STRINGS = "conversations only (the prompts are messages): choose a model with a chat template instead"
MAX_COMPUTE_MULTIPLIER = 64.0
MAX_GENERATIONS = 1_024
MAX_STEPS = 10_000_000  # steps between validation runs
REASONING_EFFORTS = ("default", "low", "medium", "high")


@dataclass(frozen=True, kw_only=True)
class GRPORequest(MethodRequest):
    algorithm: ClassVar[str] = "grpo"
    grader: Given[dict[str, Any]] | None = None  # scores each sampled answer (llama_stack_provider_trl.graders)
    compute_multiplier: Given[float] | None = None  # scales the provider config's num_generations; None: 1
    eval_interval: Given[int] | None = None  # steps between validation runs; None: once an epoch
    eval_samples: Given[int] | None = None  # answers sampled per validation prompt; None: num_generations
    reasoning_effort: Given[str] | None = None  # for a chat template that reads it; None or default: not passed


class GRPOJobSpec(JobSpecBase):
    """Reinforcement fine-tuning: TRL's GRPOTrainer samples ``num_generations`` answers per prompt and the grader
    scores them. ``batch_size`` counts prompts per optimizer step (each with its group of answers)."""

    algorithm: Literal["grpo"] = "grpo"
    grader: dict[str, Any] = Field(description="OpenAI's grader object, compiled into the reward function.")
    grader_settings: dict[str, Any] = Field(
        default_factory=dict, description="The operator's grader settings (graders.GraderSettings), as a dict."
    )
    num_generations: int = Field(description="Answers sampled per prompt (a group); at least 2.")
    max_completion_length: int = Field(description="Longest sampled answer in tokens.")
    temperature: float
    top_p: float
    beta: float = Field(description="KL weight against the initial model; 0: no reference model.")
    loss_type: str = Field(description="TRL's GRPO loss_type.")
    eval_steps: int | None = Field(default=None, description="Steps between validation runs; None: no validation.")
    num_generations_eval: int = Field(default=2, description="Answers sampled per validation prompt.")
    chat_template_kwargs: dict[str, str] = Field(
        default_factory=dict, description="Passed to the chat template with each prompt (reasoning_effort)."
    )


class GRPO(Algorithm):
    name = "grpo"
    title = "reinforcement jobs"
    spec_type = GRPOJobSpec
    recipe_module = "llama_stack_provider_trl.recipes.grpo_training_single_device"
    metrics = MetricNames(
        panels=(Panel("Reward", "mean reward of the sampled answers", "reward", "eval_reward", spread="reward_std"),),
        result_columns={
            "train_reward": "reward",  # the grader's mean over the step's answers, and its spread
            "train_reward_std": "reward_std",
            "train_kl": "kl",
            "completion_length": "completions/mean_length",
            "clipped_ratio": "completions/clipped_ratio",
            "valid_reward": "eval_reward",
        },
        # each named sub-grader's mean: train_sub_reward_<name>
        result_patterns={"train_sub_reward_{}": r"^grader/(?!errors/)(.+)/mean$"},
    )
    config_fields = frozenset(
        {"num_generations", "max_completion_length", "temperature", "top_p", "grpo_beta", "grpo_loss_type"}
    )

    def check_fields(self, method: MethodRequest) -> None:
        assert isinstance(method, GRPORequest)

    def settings(self, request: JobRequest, job: TrlPostTrainingConfig, shared: dict[str, Any]) -> dict[str, Any]:
        method = request.method
        assert isinstance(method, GRPORequest)
        return _grpo_settings(request, method, job, shared["batch_size"], shared["num_processes"])

    async def rows(self, request: JobRequest, config: TrlPostTrainingConfig, sources: RequestSources) -> TrainingRows:
        train = await checked_rows(request.dataset_id, None, config, sources, check_prompt_rows)
        validation = request.validation_dataset_id
        evaluation = await checked_rows(validation, None, config, sources, check_prompt_rows) if validation else None
        return TrainingRows(train=train, eval=evaluation, conversational=True, strings=PROMPT_STRINGS)

    def finish(self, request: JobRequest, settings: dict[str, Any], model: str, rows: TrainingRows) -> None:
        method = request.method
        assert isinstance(method, GRPORequest)
        settings.update(_grpo_data_settings(request, method, settings, model, len(rows.train), rows.eval is not None))

    def shown(self, spec: Any, setup: dict[str, Any]) -> dict[str, Any]:
        return {"num_generations": spec.num_generations, "beta": spec.beta, "loss_type": spec.loss_type}


def steps_per_epoch(num_prompts: int, prompts_per_step: int, max_steps_per_epoch: int | None) -> int:
    """Optimizer steps in an epoch of a reinforcement job: TRL's sampler leaves out the prompts that do not fill a last
    step's batch; ``max_steps_per_epoch`` (None or 0: no limit) cuts the epoch short."""
    full_epoch = max(num_prompts // prompts_per_step, 1)
    return min(full_epoch, max_steps_per_epoch or full_epoch)


def _grpo_settings(
    request: JobRequest, method: GRPORequest, job: TrlPostTrainingConfig, batch_size: int, num_processes: int
) -> dict[str, Any]:
    """A reinforcement job's sampling and loss settings, from the provider config (and its per-job overrides) and
    the request's compute_multiplier, eval_samples and grader."""
    multiplier = 1.0 if method.compute_multiplier is None else number(method.compute_multiplier, MAX_COMPUTE_MULTIPLIER)
    num_generations = round(job.num_generations * multiplier)
    if num_generations < 2 or num_generations > MAX_GENERATIONS:
        field = method.compute_multiplier.field if method.compute_multiplier else f"{request.overrides.field}"
        raise RequestError(
            field,
            f"num_generations {job.num_generations} x compute_multiplier {multiplier:g} gives {num_generations} "
            f"answers per prompt; GRPO compares a group of 2 to {MAX_GENERATIONS}",
        )
    if batch_size * num_generations % num_processes:
        raise RequestError(
            request.batch_size.field,
            f"{batch_size} prompts x {num_generations} answers do not split evenly over {num_processes} processes; "
            f"choose a batch_size that does",
        )
    eval_samples = (
        num_generations if method.eval_samples is None else positive_int(method.eval_samples, MAX_GENERATIONS)
    )
    if method.grader is None:
        raise RequestError("grader", "a reinforcement job needs a grader: the object that scores each sampled answer")
    grader_settings = GraderSettings.from_config(job)
    compile_grader(method.grader.value, grader_settings, field=method.grader.field)  # as graders/validate checks it
    return {
        "grader": method.grader.value,
        "grader_settings": grader_settings.to_dict(),
        "num_generations": num_generations,
        "max_completion_length": job.max_completion_length,
        "temperature": job.temperature,
        "top_p": job.top_p,
        "beta": job.grpo_beta,
        "loss_type": job.grpo_loss_type,
        "num_generations_eval": eval_samples,
        "padding_free": False,  # answers are sampled, then scored padded: TRL's GRPO does not pack
    }


def _grpo_data_settings(
    request: JobRequest, method: GRPORequest, settings: dict[str, Any], model: str, num_prompts: int, validates: bool
) -> dict[str, Any]:
    """What needs the prompts and the model: a full first batch, the validation interval, the reasoning effort."""
    batch_size = settings["batch_size"]
    if num_prompts < batch_size:
        raise RequestError(
            request.batch_size.field,
            f"{batch_size} prompts a step, and {request.dataset_id.field} has {num_prompts}; give a batch_size of "
            f"at most {num_prompts}, or more prompts",
        )
    eval_steps = None
    if method.eval_interval is not None:
        if not validates:
            raise RequestError(
                method.eval_interval.field, "validation runs on a validation file; give one, or leave it out"
            )
        eval_steps = positive_int(method.eval_interval, MAX_STEPS)
    elif validates:  # once an epoch
        prompts_per_step = batch_size * settings["gradient_accumulation_steps"]
        eval_steps = steps_per_epoch(num_prompts, prompts_per_step, settings["max_steps_per_epoch"])
    return {"eval_steps": eval_steps, "chat_template_kwargs": _reasoning_effort(method.reasoning_effort, model)}


def _reasoning_effort(given: Given[str] | None, model: str) -> dict[str, str]:
    """OpenAI's reasoning_effort reaches the model only through a chat template that reads ``reasoning_effort`` (as
    gpt-oss's does); for any other model there is nothing it could change, so it is refused rather than ignored."""
    if given is None or given.value == "default":
        return {}
    if given.value not in REASONING_EFFORTS:
        raise RequestError(given.field, f"{given.value!r} is not one of {', '.join(REASONING_EFFORTS)}")
    template = chat_template(model)
    if template is not None and "reasoning_effort" not in template:
        raise RequestError(
            given.field,
            f"the chat template of '{model}' does not read reasoning_effort, so {given.value!r} could not change "
            "what it samples; leave it out (or 'default'), or train a model whose template takes it",
        )
    return {"reasoning_effort": given.value}
