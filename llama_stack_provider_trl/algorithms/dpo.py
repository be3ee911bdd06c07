"""DPO: preference optimization with TRL's DPOTrainer (recipes/dpo_training_single_device.py).

Its request fields (``DPORequest``: beta, the loss), its checks, its job spec (``DPOJobSpec``), its preference rows
(dpo_rows.py), the metrics it logs and how a status shows its settings.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from llama_stack_provider_trl.algorithms.algorithm import Algorithm, MetricNames, TrainingRows
from llama_stack_provider_trl.algorithms.dpo_rows import PreferenceRows, check_preference_rows
from llama_stack_provider_trl.common.job_spec import JobSpecBase, ReferenceStrategy
from llama_stack_provider_trl.config import TrlPostTrainingConfig, check_loss_type, length_normalized
from llama_stack_provider_trl.engine.curves import Panel
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, MethodRequest, RequestSources
from llama_stack_provider_trl.engine.training_data import training_and_validation_rows
from llama_stack_provider_trl.engine.values import number, refuse_if_set

MAX_BETA = 1_000.0
PREFERENCE_STRINGS = "prompt/chosen/rejected strings (data_format 'instruct')"  # when a model has no chat template


@dataclass(frozen=True, kw_only=True)
class DPORequest(MethodRequest):
    algorithm: ClassVar[str] = "dpo"
    beta: Given[float] | None = None  # None: the provider config's dpo_beta
    loss_type: Given[str] | None = None  # None: the provider config's dpo_loss_type
    packed: Given[bool] | None = None  # several pairs packed into one row: not a DPO option
    train_on_input: Given[bool] | None = None  # a loss on the prompt: not a DPO option


class DPOJobSpec(JobSpecBase):
    algorithm: Literal["dpo"] = "dpo"
    beta: float
    loss_types: list[str] = Field(description="TRL loss_type: one or more DPO losses, summed with loss_weights.")
    loss_weights: list[float] | None = None
    reference_strategy: ReferenceStrategy


class DPO(Algorithm):
    name = "dpo"
    title = "DPO"
    spec_type = DPOJobSpec
    recipe_module = "llama_stack_provider_trl.recipes.dpo_training_single_device"
    metrics = MetricNames(
        panels=(
            Panel(
                "Reward margin",
                "reward of chosen minus rejected",
                "rewards/margins",
                "eval_rewards/margins",
                zero_line=True,
            ),
            Panel(
                "Preference accuracy",
                "pairs with chosen > rejected",
                "rewards/accuracies",
                "eval_rewards/accuracies",
                share=True,
            ),
        ),
        result_columns={
            "train_accuracy": "rewards/accuracies",
            "train_reward_margin": "rewards/margins",
            "valid_accuracy": "eval_rewards/accuracies",
        },
        event_names={
            "train_mean_reward_accuracy": "rewards/accuracies",
            "train_mean_token_accuracy": "mean_token_accuracy",  # TRL's DPOTrainer logs a token accuracy too
        },
    )
    config_fields = frozenset({"dpo_loss_type", "loss_weights", "use_reference_model", "normalize_rewards", "dpo_beta"})

    def check_fields(self, method: MethodRequest) -> None:
        assert isinstance(method, DPORequest)
        if method.beta is not None:
            number(method.beta, MAX_BETA)
        _loss_type(method.loss_type)
        refuse_if_set(method.packed, "TRL's DPOTrainer does not pack preference pairs; set false")
        refuse_if_set(method.train_on_input, "DPO scores completions only; there is no loss on the prompt. Set false")

    def settings(self, request: JobRequest, job: TrlPostTrainingConfig, shared: dict[str, Any]) -> dict[str, Any]:
        method = request.method
        assert isinstance(method, DPORequest)
        loss_types, loss_weights = _losses(_loss_type(method.loss_type), method.loss_type, request.overrides, job)
        return {
            "beta": job.dpo_beta if method.beta is None else number(method.beta, MAX_BETA),
            "loss_types": loss_types,
            "loss_weights": loss_weights,
            "reference_strategy": _reference_strategy(job),
        }

    async def rows(self, request: JobRequest, config: TrlPostTrainingConfig, sources: RequestSources) -> TrainingRows:
        train, evaluation = await training_and_validation_rows(request, config, sources, check_preference_rows)
        if evaluation is not None:
            _check_same_format(request, train, evaluation)
        return TrainingRows(
            train=train.rows,
            eval=evaluation.rows if evaluation else None,
            conversational=train.shape == "conversational",
            strings=PREFERENCE_STRINGS,
        )

    def shown(self, spec: Any, setup: dict[str, Any]) -> dict[str, Any]:
        return {
            "reference_strategy": spec.reference_strategy,
            "loss_type": spec.loss_types,
            "loss_weights": spec.loss_weights,
            "beta": spec.beta,
        }


def _loss_type(given: Given[str] | None) -> str | None:
    if given is None:
        return None
    try:
        return check_loss_type(given.value)
    except ValueError as exc:
        raise RequestError(given.field, str(exc)) from exc


def _losses(
    loss: str | None, given: Given[str] | None, overrides: Given[dict[str, Any]], job: TrlPostTrainingConfig
) -> tuple[list[str], list[float] | None]:
    """(TRL loss_type list, loss_weights): the request's single loss wins over the config's list. With
    normalize_rewards, each runs as its length-normalized form (the config's own list was checked with it)."""
    if loss is None or given is None:  # the config's losses, validated with its normalize_rewards
        return (length_normalized(job.loss_types) if job.normalize_rewards else job.loss_types), job.loss_weights
    if "dpo_loss_type" in overrides.value and job.loss_types != [loss]:
        raise RequestError(
            given.field, f"'{loss}' conflicts with {overrides.field}.dpo_loss_type {job.loss_types}; set only one"
        )
    if not job.normalize_rewards:
        return [loss], None
    try:
        return length_normalized([loss]), None
    except ValueError as exc:
        raise RequestError(given.field, str(exc)) from exc


def _reference_strategy(job: TrlPostTrainingConfig) -> ReferenceStrategy:
    if not job.use_reference_model:
        return "precomputed_log_probs"
    return "adapters_disabled" if job.use_lora else "frozen_copy"


def _check_same_format(request: JobRequest, train: PreferenceRows, evaluation: PreferenceRows) -> None:
    if (evaluation.shape, evaluation.implicit_prompt) != (train.shape, train.implicit_prompt):
        assert request.validation_dataset_id is not None
        raise RequestError(
            request.validation_dataset_id.field,
            f"its rows ({evaluation.shape}, fields {list(evaluation.fields)}) differ from the training rows "
            f"({train.shape}, fields {list(train.fields)}); use one format for both",
        )
