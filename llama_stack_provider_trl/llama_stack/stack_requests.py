"""Llama Stack 0.6.1's training requests in the engine's terms (engine/job_request.py), each value named by its
0.6.1 field.

Only values the client really set are passed on: the 0.6.1 schema fills in defaults (dtype bf16,
max_steps_per_epoch 1, loss_type sigmoid) that a client never asked for, and those leave the provider config's
value in place.
"""

from typing import Any

from pydantic import BaseModel

from llama_stack_provider_trl.algorithms.dpo import DPORequest
from llama_stack_provider_trl.algorithms.sft import LoraRequest, SFTRequest
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, TrackerRequest
from llama_stack_provider_trl.llama_stack.stack_api import PreferenceOptimizeRequest, SupervisedFineTuneRequest

TC = "training_config"
DC = f"{TC}.data_config"
OC = f"{TC}.optimizer_config"
EC = f"{TC}.efficiency_config"


def _set(model: BaseModel | None, name: str, prefix: str) -> Given[Any] | None:
    """The value of ``name`` if the client set it, named ``prefix.name``."""
    if model is None or name not in model.model_fields_set:
        return None
    value = getattr(model, name)
    if value is None:
        return None
    return Given(getattr(value, "value", value), f"{prefix}.{name}")  # an enum is passed on as its value


def _given(model: BaseModel | None, name: str, prefix: str) -> Given[Any] | None:
    """The value of ``name`` as the request holds it (set or the schema's default), named ``prefix.name``."""
    value = None if model is None else getattr(model, name)
    return None if value is None else Given(getattr(value, "value", value), f"{prefix}.{name}")


def _named(value: Any, field: str) -> Given[Any] | None:
    """A value the schema leaves optional; empty counts as not given."""
    return Given(value, field) if value else None


def dpo_job_request(request: PreferenceOptimizeRequest) -> JobRequest:
    data = request.training_config.data_config
    return JobRequest(
        job_uuid=Given(request.job_uuid, "job_uuid"),
        model=Given(request.finetuned_model, "finetuned_model"),
        method=DPORequest(
            beta=Given(request.algorithm_config.beta, "algorithm_config.beta"),  # required by the 0.6.1 schema
            loss_type=_set(request.algorithm_config, "loss_type", "algorithm_config"),
            packed=_given(data, "packed", DC),
            train_on_input=_given(data, "train_on_input", DC),
        ),
        **_training(request),
    )


def sft_job_request(request: SupervisedFineTuneRequest) -> JobRequest:
    algorithm = request.algorithm_config
    lora = None
    if algorithm is not None and algorithm.type == "LoRA":
        lora = LoraRequest(
            rank=Given(algorithm.rank, "algorithm_config.rank"),
            alpha=Given(algorithm.alpha, "algorithm_config.alpha"),
            attn_modules=Given(algorithm.lora_attn_modules, "algorithm_config.lora_attn_modules"),
            mlp=Given(algorithm.apply_lora_to_mlp, "algorithm_config.apply_lora_to_mlp"),
            output=Given(algorithm.apply_lora_to_output, "algorithm_config.apply_lora_to_output"),
            use_dora=_given(algorithm, "use_dora", "algorithm_config"),
            quantize_base=_given(algorithm, "quantize_base", "algorithm_config"),
        )
    data = request.training_config.data_config
    return JobRequest(
        job_uuid=Given(request.job_uuid, "job_uuid"),
        model=Given(request.model or "", "model"),
        method=SFTRequest(
            lora=lora,
            unsupported_algorithm=Given("QAT", "algorithm_config.type")
            if algorithm and algorithm.type == "QAT"
            else None,
            checkpoint_dir=_named(request.checkpoint_dir, "checkpoint_dir"),
            packed=_set(data, "packed", DC),  # unset: the provider's default decides
            train_on_input=_given(data, "train_on_input", DC),
        ),
        **_training(request),
    )


def _training(request: PreferenceOptimizeRequest | SupervisedFineTuneRequest) -> dict[str, Any]:
    """The fields both requests share, by their JobRequest names."""
    training = request.training_config
    data = training.data_config
    efficiency = training.efficiency_config
    fsdp = efficiency is not None and bool(efficiency.memory_efficient_fsdp_wrap or efficiency.fsdp_cpu_offload)
    return dict(
        n_epochs=Given(training.n_epochs, f"{TC}.n_epochs"),
        max_steps_per_epoch=_set(training, "max_steps_per_epoch", TC),
        gradient_accumulation_steps=_given(training, "gradient_accumulation_steps", TC),
        dataset_id=Given(data.dataset_id, f"{DC}.dataset_id") if data else Given("", DC),
        batch_size=Given(data.batch_size if data else 0, f"{DC}.batch_size"),
        shuffle=_given(data, "shuffle", DC),
        data_format=_given(data, "data_format", DC),
        validation_dataset_id=_named(data and data.validation_dataset_id, f"{DC}.validation_dataset_id"),
        optimizer=_given(training.optimizer_config, "optimizer_type", OC),
        learning_rate=_given(training.optimizer_config, "lr", OC),
        weight_decay=_given(training.optimizer_config, "weight_decay", OC),
        warmup_steps=_given(training.optimizer_config, "num_warmup_steps", OC),
        gradient_checkpointing=_set(efficiency, "enable_activation_checkpointing", EC),
        activation_offloading=_given(efficiency, "enable_activation_offloading", EC),
        fsdp=Given(True, EC) if fsdp else None,
        dtype=_set(training, "dtype", TC),
        overrides=Given(request.hyperparam_search_config or {}, "hyperparam_search_config"),
        trackers=tuple(
            TrackerRequest(name=Given(name, f"logger_config.{name}"), options=Given(options, f"logger_config.{name}"))
            for name, options in (request.logger_config or {}).items()
        ),
    )
