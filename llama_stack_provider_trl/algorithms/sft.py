"""SFT: supervised fine-tuning with TRL's SFTTrainer (recipes/sft_training_single_device.py).

Its request fields (``SFTRequest``: Llama Stack's LoRA config, packing, the loss on the prompt), its checks, its job
spec (``SFTJobSpec``), its rows (sft_rows.py), the metrics it logs and how a status shows its settings.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from llama_stack_provider_trl.algorithms.algorithm import Algorithm, MetricNames, TrainingRows
from llama_stack_provider_trl.algorithms.sft_rows import SFTRows, check_sft_rows
from llama_stack_provider_trl.common.job_spec import JobSpecBase, LoraSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.curves import Panel
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, MethodRequest, RequestSources
from llama_stack_provider_trl.engine.lora_targets import UnknownLoraModule, lora_target_modules
from llama_stack_provider_trl.engine.training_data import training_and_validation_rows
from llama_stack_provider_trl.engine.training_settings import check_qlora, lora
from llama_stack_provider_trl.engine.values import flag, number, positive_int

MAX_LORA_RANK = 1_024
SFT_STRINGS = "text or prompt/completion strings (data_format 'instruct')"  # when a model has no chat template
MAX_LORA_ALPHA = 65_536.0


@dataclass(frozen=True, kw_only=True)
class LoraRequest:
    """SFT's LoRA as Llama Stack asks for it (LoraFinetuningConfig): attention layers in torchtune's names."""

    rank: Given[int]
    alpha: Given[float]
    attn_modules: Given[list[str]]  # q_proj, k_proj, v_proj, output_proj (or the model's own layer names)
    mlp: Given[bool]  # every linear layer of the MLP blocks too
    output: Given[bool]  # the output head (lm_head) too
    use_dora: Given[bool] | None = None
    quantize_base: Given[bool] | None = None  # QLoRA: the frozen base in 4-bit


@dataclass(frozen=True, kw_only=True)
class SFTRequest(MethodRequest):
    algorithm: ClassVar[str] = "sft"
    lora: LoraRequest | None = None  # None: the provider config's LoRA settings (use_lora), else a full fine-tune
    unsupported_algorithm: Given[str] | None = None  # an algorithm config this engine does not run (QAT)
    checkpoint_dir: Given[str] | None = None  # where to save: the engine keeps checkpoints in the job's directory
    packed: Given[bool] | None = None  # None: the provider config's padding_free
    train_on_input: Given[bool] | None = None  # a loss on the prompt too; None: on the completion only


class SFTJobSpec(JobSpecBase):
    algorithm: Literal["sft"] = "sft"
    completion_only_loss: bool = Field(
        default=True,
        description="Loss on the completion / assistant tokens only (TRL's completion-only and assistant-only "
        "losses); False: on every token of the sequence.",
    )


class SFT(Algorithm):
    name = "sft"
    title = "SFT"
    spec_type = SFTJobSpec
    recipe_module = "llama_stack_provider_trl.recipes.sft_training_single_device"
    metrics = MetricNames(
        panels=(
            Panel("Token accuracy", "next-token accuracy", "mean_token_accuracy", "eval_mean_token_accuracy", True),
        ),
        result_columns={"train_accuracy": "mean_token_accuracy", "valid_accuracy": "eval_mean_token_accuracy"},
        event_names={"train_mean_token_accuracy": "mean_token_accuracy"},
    )

    def check_fields(self, method: MethodRequest) -> None:
        assert isinstance(method, SFTRequest)
        if method.unsupported_algorithm is not None:
            raise RequestError(
                method.unsupported_algorithm.field,
                f"{method.unsupported_algorithm.value} is not supported by this provider; send a LoRA config "
                "(type LoRA) or none for a full fine-tune",
            )
        if method.checkpoint_dir is not None:
            raise RequestError(
                method.checkpoint_dir.field,
                "is not honoured: a job saves its checkpoints in its own directory under the provider's output_dir, "
                "and the job's artifacts list their paths; leave it unset",
            )
        flag(method.packed, default=False)
        flag(method.train_on_input, default=False)

    def settings(self, request: JobRequest, job: TrlPostTrainingConfig, shared: dict[str, Any]) -> dict[str, Any]:
        method = request.method
        assert isinstance(method, SFTRequest)
        return {
            "lora": _lora(method.lora, job, shared["device"], request.overrides),
            "completion_only_loss": not flag(method.train_on_input, default=False),
            "padding_free": flag(method.packed, default=False) if method.packed is not None else job.padding_free,
        }

    def finish(self, request: JobRequest, settings: dict[str, Any], model: str, rows: TrainingRows) -> None:
        method = request.method
        assert isinstance(method, SFTRequest)
        if method.lora is not None:
            targets = _lora_targets(method.lora, model)
            settings["lora"] = settings["lora"].model_copy(update={"target_modules": targets})

    async def rows(self, request: JobRequest, config: TrlPostTrainingConfig, sources: RequestSources) -> TrainingRows:
        train, evaluation = await training_and_validation_rows(request, config, sources, check_sft_rows)
        if evaluation is not None:
            _check_same_format(request, train, evaluation)
        return TrainingRows(
            train=train.rows,
            eval=evaluation.rows if evaluation else None,
            conversational=train.conversational,
            strings=SFT_STRINGS,
        )

    def shown(self, spec: Any, setup: dict[str, Any]) -> dict[str, Any]:
        # completion, assistant or all: the tokens that carry the loss, once the recipe has read the rows
        return {"loss_on": setup.get("loss_on", "completion" if spec.completion_only_loss else "all")}


def _lora(
    given: LoraRequest | None, job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]
) -> LoraSpec | None:
    """SFT's LoRA from the request's LoRA config (its layer names are mapped once the model's files are known);
    without one, the provider config's (use_lora), else a full fine-tune. An SFT adapter is merged into a full
    model too (``final-merged``) unless the request's overrides say merge_adapter: false."""
    if given is None:
        return lora(job, device, overrides)
    quantize = flag(given.quantize_base, default=False)
    if quantize:
        check_qlora(given.quantize_base.field if given.quantize_base else "quantize_base", device)
    names = given.attn_modules.value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise RequestError(given.attn_modules.field, f"must be a list of layer names, got {names!r}")
    return LoraSpec(
        rank=positive_int(given.rank, MAX_LORA_RANK),
        alpha=number(given.alpha, MAX_LORA_ALPHA),
        dropout=job.lora_dropout,
        target_modules=names,
        use_dora=flag(given.use_dora, default=False),
        quantize_4bit=quantize,
        merge_adapter=overrides.value.get("merge_adapter", True) is not False,
    )


def _lora_targets(given: LoraRequest, model: str) -> list[str]:
    try:
        return lora_target_modules(model, given.attn_modules.value, mlp=given.mlp.value, output=given.output.value)
    except UnknownLoraModule as exc:
        raise RequestError(given.attn_modules.field, str(exc)) from exc


def _check_same_format(request: JobRequest, train: SFTRows, evaluation: SFTRows) -> None:
    if sorted(evaluation.rows[0]) != sorted(train.rows[0]) or evaluation.conversational != train.conversational:
        assert request.validation_dataset_id is not None
        raise RequestError(
            request.validation_dataset_id.field,
            f"its rows ({evaluation.format}) train differently from the training rows ({train.format}); use one "
            "format for both",
        )
