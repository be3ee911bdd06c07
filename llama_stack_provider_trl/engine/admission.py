"""Turn a PreferenceOptimizeRequest into a DPOJobSpec, or say which field is wrong and how to fix it.

Everything here runs at request time, before a directory or a process exists, and raises
RequestError (HTTP 400) naming the field. A request value wins over the provider config only
when the request really sets it: the 0.6.1 schema fills in defaults (dtype bf16,
max_steps_per_epoch 1, loss_type sigmoid) that a client never asked for.
"""

import importlib.util
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llama_stack_provider_trl.common.job_spec import DPOJobSpec, LoraSpec, Precision, ReferenceStrategy
from llama_stack_provider_trl.config import PER_JOB_FIELDS, TrlPostTrainingConfig, check_loss_type
from llama_stack_provider_trl.engine.devices import check_precision
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.stack_api import PreferenceOptimizeRequest

JOB_UUID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Fewer distinct batch shapes on a GPU; on a CPU padding is pure waste.
AUTO_PAD_MULTIPLE_CUDA = 128
_DTYPES: dict[str, Precision] = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
}
_MIXED_PRECISION: dict[str, Precision] = {"auto": "auto", "bf16": "bf16", "fp16": "fp16", "no": "fp32"}


def _bad(field: str, problem: str) -> RequestError:
    return RequestError(field, problem)


def check_job_uuid(job_uuid: str) -> str:
    if not JOB_UUID_PATTERN.match(job_uuid or ""):
        raise _bad(
            "job_uuid",
            f"{job_uuid!r} is not allowed; use 1-128 characters from A-Z a-z 0-9 . _ - starting with a letter or "
            "digit (it names the job's directory)",
        )
    return job_uuid


def job_dir_for(output_root: Path, job_uuid: str) -> Path:
    """The job's directory, guaranteed to be a direct child of ``output_root``."""
    job_dir = (output_root / check_job_uuid(job_uuid)).resolve()
    if job_dir.parent != output_root:
        raise _bad("job_uuid", f"{job_uuid!r} does not name a directory inside the output directory")
    return job_dir


def _positive_int(field: str, value: int) -> int:
    if value <= 0:
        raise _bad(field, f"must be a positive integer, got {value}")
    return value


def _non_negative(field: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise _bad(field, f"must be a finite number >= 0, got {value}")
    return value


def _positive_float(field: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise _bad(field, f"must be a finite number > 0, got {value}")
    return value


def job_config(config: TrlPostTrainingConfig, overrides: dict[str, Any] | None) -> TrlPostTrainingConfig:
    """The provider config with the request's per-job overrides (hyperparam_search_config) applied."""
    if not overrides:
        return config
    unknown = sorted(set(overrides) - PER_JOB_FIELDS)
    if unknown:
        raise _bad(
            "hyperparam_search_config",
            f"unknown or not per-job keys {unknown}; a job may override: {', '.join(sorted(PER_JOB_FIELDS))}",
        )
    try:
        return TrlPostTrainingConfig.model_validate({**config.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}" for error in exc.errors()
        )
        raise _bad("hyperparam_search_config", problems) from exc


def check_model(model: str) -> str:
    """A local directory as an absolute path (the job runs in its own directory), else the name as given."""
    if not model or not model.strip():
        raise _bad("finetuned_model", "is empty; give a Hugging Face model id or a local model directory")
    local = Path(model).expanduser()
    if os.path.isdir(local):  # unlike Path.is_dir, False (not an error) for a name too long
        return str(local.resolve())
    if model.startswith(("/", "./", "../", "~")):
        raise _bad("finetuned_model", f"local model directory '{model}' does not exist")
    return model


def _reference_strategy(config: TrlPostTrainingConfig) -> ReferenceStrategy:
    if not config.use_reference_model:
        return "precomputed_log_probs"
    return "adapters_disabled" if config.use_lora else "frozen_copy"


def _lora(config: TrlPostTrainingConfig, device: str) -> LoraSpec | None:
    if not config.use_lora:
        return None
    if config.qlora:
        if not device.startswith("cuda"):
            raise _bad(
                "hyperparam_search_config.qlora", f"4-bit QLoRA needs a CUDA device, this server trains on {device}"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise _bad("hyperparam_search_config.qlora", "4-bit QLoRA needs bitsandbytes: pip install bitsandbytes")
    return LoraSpec(
        rank=config.lora_rank,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        quantize_4bit=config.qlora,
        merge_adapter=config.merge_adapter,
    )


def _precision(request: PreferenceOptimizeRequest, config: TrlPostTrainingConfig, device: str) -> Precision:
    training = request.training_config
    if "dtype" in training.model_fields_set and training.dtype is not None:
        precision = _DTYPES.get(training.dtype.lower())
        if precision is None:
            raise _bad("training_config.dtype", f"unknown dtype {training.dtype!r}; use bf16, fp16 or fp32")
    else:
        precision = _MIXED_PRECISION[config.mixed_precision]
    try:
        check_precision(device, precision)
    except ValueError as exc:
        raise _bad("training_config.dtype", str(exc)) from exc
    return precision


def _master_weights(config: TrlPostTrainingConfig, precision: Precision) -> str:
    if config.master_weights == "optimizer" and precision == "fp16":
        raise _bad(
            "hyperparam_search_config.master_weights",
            "optimizer needs bf16 (fp16 weights would need loss scaling) and this job runs in fp16; ask for "
            "training_config.dtype bf16, or master_weights: model",
        )
    return config.master_weights


def _torch_compile(config: TrlPostTrainingConfig, device: str) -> bool:
    """torch.compile needs a C++ compiler to build CPU kernels and Triton to build CUDA ones."""
    if not config.torch_compile:
        return False
    problem = None
    if device == "cpu":
        compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
        if not any(shutil.which(c) for c in compilers):
            problem = f"compiling for the CPU needs a C++ compiler, and none of {compilers} is on PATH"
    elif device.startswith("cuda") and importlib.util.find_spec("triton") is None:  # PyPI's CUDA torch brings it
        problem = "compiling for a CUDA GPU needs Triton: pip install triton"
    elif device == "mps":
        problem = "torch.compile's MPS backend is experimental and not supported here"
    if problem:
        raise _bad("hyperparam_search_config.torch_compile", f"{problem}; set torch_compile: false")
    return True


def _pad_multiple(config: TrlPostTrainingConfig, device: str) -> int | None:
    if config.pad_to_multiple_of == "auto":  # a job that runs packed pads nothing: the recipe knows if it does
        return AUTO_PAD_MULTIPLE_CUDA if device.startswith("cuda") else None
    return config.pad_to_multiple_of


def _losses(request: PreferenceOptimizeRequest, config: TrlPostTrainingConfig) -> tuple[list[str], list[float] | None]:
    """(TRL loss_type list, loss_weights): the request's single loss wins over the config's list."""
    algorithm = request.algorithm_config
    if "loss_type" not in algorithm.model_fields_set:
        return config.loss_types, config.loss_weights
    try:
        loss = check_loss_type(algorithm.loss_type.value)
    except ValueError as exc:
        raise _bad("algorithm_config.loss_type", str(exc)) from exc
    overrides = request.hyperparam_search_config or {}
    if "dpo_loss_type" in overrides and config.loss_types != [loss]:
        raise _bad(
            "algorithm_config.loss_type",
            f"'{loss}' conflicts with hyperparam_search_config.dpo_loss_type {config.loss_types}; set only one",
        )
    return [loss], None


def _reject_unsupported(request: PreferenceOptimizeRequest) -> None:
    data = request.training_config.data_config
    efficiency = request.training_config.efficiency_config
    if data is not None and data.packed:
        raise _bad("training_config.data_config.packed", "packing is not supported for DPO in TRL 1.16; set false")
    if data is not None and data.train_on_input:
        raise _bad(
            "training_config.data_config.train_on_input",
            "DPO scores completions only; there is no loss on the prompt to turn on. Set false",
        )
    if efficiency is not None and (efficiency.memory_efficient_fsdp_wrap or efficiency.fsdp_cpu_offload):
        raise _bad(
            "training_config.efficiency_config",
            "FSDP options do not apply: this provider trains on a single device. Set them false",
        )
    if request.logger_config:
        raise _bad(
            "logger_config",
            f"no keys are supported (got {sorted(request.logger_config)}); metrics appear in job status. Send {{}}",
        )


def build_job_spec(
    request: PreferenceOptimizeRequest,
    provider_config: TrlPostTrainingConfig,
    job_dir: Path,
    device: str,
    num_rows: int,
) -> DPOJobSpec:
    """Resolve every hyperparameter from the request, its per-job overrides and the provider config."""
    _reject_unsupported(request)
    config = job_config(provider_config, request.hyperparam_search_config)
    training = request.training_config
    data = training.data_config
    assert data is not None, "dataset_id_of() checks data_config first"
    optimizer = training.optimizer_config
    efficiency = training.efficiency_config
    loss_types, loss_weights = _losses(request, config)
    precision = _precision(request, config, device)

    gradient_checkpointing = config.gradient_checkpointing
    if efficiency is not None and "enable_activation_checkpointing" in efficiency.model_fields_set:
        gradient_checkpointing = bool(efficiency.enable_activation_checkpointing)

    max_steps_per_epoch = None
    if "max_steps_per_epoch" in training.model_fields_set:
        max_steps_per_epoch = _positive_int("training_config.max_steps_per_epoch", training.max_steps_per_epoch)

    return DPOJobSpec(
        job_uuid=request.job_uuid,
        model=check_model(request.finetuned_model),
        job_dir=str(job_dir),
        device=device,
        precision=precision,
        beta=_positive_float("algorithm_config.beta", request.algorithm_config.beta),
        loss_types=loss_types,
        loss_weights=loss_weights,
        reference_strategy=_reference_strategy(config),
        lora=_lora(config, device),
        n_epochs=_positive_int("training_config.n_epochs", training.n_epochs),
        max_steps_per_epoch=max_steps_per_epoch,
        batch_size=_positive_int("training_config.data_config.batch_size", data.batch_size),
        gradient_accumulation_steps=_positive_int(
            "training_config.gradient_accumulation_steps", training.gradient_accumulation_steps
        ),
        shuffle=data.shuffle,
        learning_rate=_positive_float("training_config.optimizer_config.lr", optimizer.lr)
        if optimizer
        else config.learning_rate,
        weight_decay=_non_negative("training_config.optimizer_config.weight_decay", optimizer.weight_decay)
        if optimizer
        else config.weight_decay,
        warmup_steps=int(_non_negative("training_config.optimizer_config.num_warmup_steps", optimizer.num_warmup_steps))
        if optimizer
        else config.warmup_steps,
        optimizer=optimizer.optimizer_type.value if optimizer else "adamw",
        max_seq_length=config.max_seq_length,
        pad_to_multiple_of=_pad_multiple(config, device),
        group_by_length=config.group_by_length,
        padding_free=config.padding_free,
        master_weights=_master_weights(config, precision),
        torch_compile=_torch_compile(config, device),
        gradient_checkpointing=gradient_checkpointing,
        activation_offloading=bool(efficiency and efficiency.enable_activation_offloading),
        logging_steps=config.logging_steps,
        save_every_epoch=config.save_every_epoch,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        trust_remote_code=config.trust_remote_code,
        num_rows=num_rows,
    )


def dataset_id_of(request: PreferenceOptimizeRequest) -> str:
    data = request.training_config.data_config
    if data is None or not data.dataset_id:
        raise _bad(
            "training_config.data_config",
            "is required: give dataset_id (a dataset registered with purpose post-training/messages) and batch_size",
        )
    return data.dataset_id
