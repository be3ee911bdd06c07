"""Admission: every check of a training request, in the order of the request's fields, then the job spec.

``admit`` takes a JobRequest (a front door's request in the engine's terms, each value with the caller's name for
its field) and returns the job to write and submit, or raises RequestError naming the caller's field and the fix.
It checks every value before any I/O (types, lower and upper bounds, the provider config's per-job overrides),
then reads what the request names through the front door's ``RequestSources`` (the model, the datasets' rows)
and checks that, and builds the spec once. Nothing here creates a file or a process.

Upper bounds stop requests that would run for years, exhaust memory or disk, or name a path no file system
accepts: out-of-range values are 400, oversize input 413. A local model must be a model directory, inside the
server's ``allowed_model_dirs`` when it sets them (403 outside). Last, with the spec built: a job whose
checkpoints cannot fit on the output directory's disk is 507, and one more job than the caller may have queued 429.
"""

import importlib.util
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from llama_stack_provider_trl.common.checkpoints import ADAPTER_CONFIG_FILE
from llama_stack_provider_trl.common.job_spec import (
    DPOJobSpec,
    GRPOJobSpec,
    LoraSpec,
    Precision,
    ReferenceStrategy,
    SFTJobSpec,
)
from llama_stack_provider_trl.config import PER_JOB_FIELDS, TrlPostTrainingConfig, check_loss_type, length_normalized
from llama_stack_provider_trl.engine.devices import check_precision
from llama_stack_provider_trl.engine.disk_space import disk_space, estimate_checkpoints, format_bytes
from llama_stack_provider_trl.engine.distributed import (
    check_strategy_combination,
    resolve_num_processes,
    resolve_strategy,
)
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest, LoraRequest
from llama_stack_provider_trl.engine.lora_targets import UnknownLoraModule, lora_target_modules
from llama_stack_provider_trl.engine.model_files import chat_template, has_chat_template, sliding_window
from llama_stack_provider_trl.engine.preference_rows import (
    SHAPE_OF_DATA_FORMAT,
    PreferenceRows,
    check_preference_rows,
)
from llama_stack_provider_trl.engine.prompt_rows import check_prompt_rows
from llama_stack_provider_trl.engine.row_fields import RowError
from llama_stack_provider_trl.engine.sft_rows import SFTRows, check_sft_rows
from llama_stack_provider_trl.engine.trackers import check_trackers
from llama_stack_provider_trl.graders import GraderSettings, compile_grader

JOB_UUID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_MODEL_CHARS = 4_096
MAX_PATH_COMPONENT_CHARS = 255  # NAME_MAX on Linux and macOS
MAX_BETA = 1_000.0
MAX_LORA_RANK = 1_024
# Provider config fields a DPO job may override that mean nothing to SFT
DPO_ONLY_OVERRIDES = frozenset(
    {"dpo_loss_type", "loss_weights", "use_reference_model", "normalize_rewards", "dpo_beta"}
)
# Provider config fields only a reinforcement job reads
GRPO_ONLY_OVERRIDES = frozenset(
    {"num_generations", "max_completion_length", "temperature", "top_p", "grpo_beta", "grpo_loss_type"}
)
MAX_COMPUTE_MULTIPLIER = 64.0
MAX_GENERATIONS = 1_024
REASONING_EFFORTS = ("default", "low", "medium", "high")
MAX_LORA_ALPHA = 65_536.0
MAX_N_EPOCHS = 10_000
MAX_STEPS = 10_000_000  # per epoch
MAX_ACCUMULATION = 65_536  # gradient accumulation steps
MAX_DATASET_ID_CHARS = 256
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_WARMUP_STEPS = 10_000_000
OPTIMIZERS = ("adamw", "adam", "sgd")
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


class RequestSources(Protocol):
    """What admission reads through the front door: its stack's registered models and datasets."""

    async def registered_model_path(self, model: str) -> str | None:
        """The files of the model registered as ``model`` (a directory or a Hub id); None if none is."""
        ...

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of the dataset; raises the front door's not-found error naming the field."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who sends the request, as far as admission needs to know: whose earlier jobs it may train from, and how many
    of its jobs wait in the queue. The front door answers both from its own authentication and access control. The
    default knows no users: every job is readable and none counts against a per-user queue limit."""

    may_read_job: Callable[[str], bool] = lambda _: True
    queued_jobs: Callable[[], int] = lambda: 0


@dataclass(frozen=True)
class AdmittedJob:
    """A request that passed every check: the spec its process runs and the rows it trains and evaluates on."""

    spec: DPOJobSpec | SFTJobSpec | GRPOJobSpec
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None


async def admit(
    request: JobRequest,
    config: TrlPostTrainingConfig,
    *,
    output_root: Path,
    device: str,
    job_exists: Callable[[str], bool],
    sources: RequestSources,
    caller: Caller = Caller(),
    checkpoint_path: Callable[[str], str | None] = lambda _: None,
) -> AdmittedJob:
    """``checkpoint_path``: the directory of an earlier job's checkpoint by its identifier (``<job_uuid>-final``,
    ``<job_uuid>-final-merged``, ``<job_uuid>-epoch-<n>``, as the artifacts list gives them), or None."""
    settings = check_request(
        request, config, output_root=output_root, device=device, job_exists=job_exists, caller=caller
    )
    given = Given(settings["model"], request.model.field)
    model = _checkpoint_model(given, checkpoint_path, config, output_root, caller)
    if model is None:
        model = await _registered_model(given, sources, config, output_root, caller)
    settings["model"] = model
    _check_adapter_base(request, model, settings["lora"])
    if request.algorithm == "sft":
        if request.lora is not None:
            settings["lora"] = settings["lora"].model_copy(
                update={"target_modules": _lora_targets(request.lora, model)}
            )
        sft_train = await _sft_rows(request.dataset_id, request.data_format, config, sources)
        sft_eval = await _sft_validation_rows(request, sft_train, config, sources)
        _check_chat_template(request.dataset_id, model, sft_train.conversational, "text or prompt/completion strings")
        rows, eval_rows = sft_train.rows, sft_eval.rows if sft_eval else None
        spec_type: type[DPOJobSpec | SFTJobSpec | GRPOJobSpec] = SFTJobSpec
    elif request.algorithm == "grpo":
        rows = await _checked_rows(request.dataset_id, None, config, sources, check_prompt_rows)
        validation = request.validation_dataset_id
        eval_rows = await _checked_rows(validation, None, config, sources, check_prompt_rows) if validation else None
        _check_chat_template(request.dataset_id, model, True, "conversations only: the prompts are messages")
        settings.update(_grpo_data_settings(request, settings, model, len(rows), eval_rows is not None))
        spec_type = GRPOJobSpec
    else:
        train = await _preference_rows(request.dataset_id, request.data_format, config, sources)
        evaluation = await _validation_rows(request, train, config, sources)
        conversational = train.shape == "conversational"
        _check_chat_template(request.dataset_id, model, conversational, "prompt/chosen/rejected strings")
        rows, eval_rows = train.rows, evaluation.rows if evaluation else None
        spec_type = DPOJobSpec
    _check_packing_window(model, settings["padding_free"], settings["max_seq_length"], request.overrides)
    spec = spec_type(**settings, num_rows=len(rows), num_eval_rows=len(eval_rows) if eval_rows else 0)
    if config.check_disk_space:
        _check_disk_space(spec, output_root)
    # After the last await: the front door submits before any other request can be admitted.
    _check_queue_share(caller, config.max_queued_jobs_per_user)
    return AdmittedJob(spec=spec, train_rows=rows, eval_rows=eval_rows)


def check_request(
    request: JobRequest,
    config: TrlPostTrainingConfig,
    *,
    output_root: Path,
    device: str,
    job_exists: Callable[[str], bool] = lambda _: False,
    caller: Caller = Caller(),
) -> dict[str, Any]:
    """Every value of the request, checked and resolved against the provider config before any I/O: the job
    spec's fields but the rows (``model`` is the name as given, or a local directory made absolute)."""
    job_dir = job_dir_for(output_root, request.job_uuid)
    if job_exists(request.job_uuid.value):
        raise RequestError(
            request.job_uuid.field,
            f"a job named '{request.job_uuid.value}' already exists; choose another {request.job_uuid.field}",
            HTTPStatus.CONFLICT,
        )
    model = check_model(request.model, config, output_root, caller)
    sft = request.algorithm == "sft"
    if request.unsupported_algorithm is not None:
        raise RequestError(
            request.unsupported_algorithm.field,
            f"{request.unsupported_algorithm.value} is not supported by this provider; send a LoRA config "
            "(type LoRA) or none for a full fine-tune",
        )
    if request.checkpoint_dir is not None:
        raise RequestError(
            request.checkpoint_dir.field,
            "is not honoured: a job saves its checkpoints in its own directory under the provider's output_dir, and "
            "the job's artifacts list their paths; leave it unset",
        )
    beta = config.dpo_beta if request.beta is None else _number(request.beta, MAX_BETA)
    loss_type = _loss_type(request.loss_type)
    n_epochs = _positive_int(request.n_epochs, MAX_N_EPOCHS)
    max_steps = None if request.max_steps_per_epoch is None else _positive_int(request.max_steps_per_epoch, MAX_STEPS)
    accumulation = request.gradient_accumulation_steps
    gradient_accumulation_steps = 1 if accumulation is None else _positive_int(accumulation, MAX_ACCUMULATION)
    _check_dataset_id(request.dataset_id)
    batch_size = _positive_int(request.batch_size, MAX_BATCH_SIZE)
    shuffle = _flag(request.shuffle, default=True)
    _check_data_format(request.data_format)
    if request.validation_dataset_id is not None:
        _check_dataset_id(request.validation_dataset_id)
    if not sft:
        _refuse_if_set(request.packed, "packing is not supported for DPO in TRL 1.16; set false")
        _refuse_if_set(request.train_on_input, "DPO scores completions only; there is no loss on the prompt. Set false")
    optimizer = _optimizer(request.optimizer)
    learning_rate = config.learning_rate if request.learning_rate is None else _number(request.learning_rate, MAX_LR)
    weight_decay = _number_or(request.weight_decay, MAX_WEIGHT_DECAY, config.weight_decay)
    warmup_steps = config.warmup_steps if request.warmup_steps is None else _warmup_steps(request.warmup_steps)
    _refuse_if_set(
        request.fsdp,
        f"these FSDP1 options do not apply; set them false and ask for FSDP2 with {request.overrides.field} "
        "num_processes and distributed_strategy: fsdp2",
    )
    precision = _precision(request.dtype, config, device)
    job = job_config(config, request.overrides)  # the provider config with this job's overrides
    loss_types, loss_weights = _losses(loss_type, request.loss_type, request.overrides, job)
    trackers = check_trackers(
        request.trackers,
        job_dir=job_dir,
        server_mlflow_uri=config.mlflow_tracking_uri,
        tracker_hosts=config.tracker_hosts,
    )
    num_processes = resolve_num_processes(job, device, request.batch_size, request.overrides.field)
    strategy = resolve_strategy(job, device, num_processes, model, request.overrides.field)
    lora = _lora(job, device, request.overrides)
    # auto packs where it can; FSDP2 shards the attention the packing would replace
    padding_free = False if strategy == "fsdp2" and job.padding_free == "auto" else job.padding_free
    master_weights = _master_weights(job, precision, request.overrides)
    torch_compile = _torch_compile(job, device, request.overrides)
    check_strategy_combination(
        strategy,
        lora=lora,
        padding_free=padding_free,
        torch_compile=torch_compile,
        master_weights=master_weights,
        overrides=request.overrides.field,
    )
    settings = {
        "job_uuid": request.job_uuid.value,
        "model": model,
        "job_dir": str(job_dir),
        "device": device,
        "precision": precision,
        "beta": beta,
        "loss_types": loss_types,
        "loss_weights": loss_weights,
        "reference_strategy": _reference_strategy(job),
        "lora": lora,
        "n_epochs": n_epochs,
        "max_steps_per_epoch": max_steps,
        "batch_size": batch_size,
        "num_processes": num_processes,
        "distributed_strategy": strategy,
        "ray_address": job.ray_address if job.executor == "ray" else None,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "shuffle": shuffle,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "optimizer": optimizer,
        "max_seq_length": job.max_seq_length,
        "pad_to_multiple_of": _pad_multiple(job, device),
        "group_by_length": job.group_by_length,
        "padding_free": padding_free,
        "master_weights": master_weights,
        "torch_compile": torch_compile,
        "gradient_checkpointing": _flag(request.gradient_checkpointing, default=job.gradient_checkpointing),
        "activation_offloading": _flag(request.activation_offloading, default=False),
        "logging_steps": job.logging_steps,
        "save_every_epoch": job.save_every_epoch,
        "save_total_limit": job.save_total_limit,
        "seed": job.seed,
        "trust_remote_code": job.trust_remote_code,
        "trackers": trackers,
    }
    if request.algorithm != "grpo":
        _refuse_overrides(request, GRPO_ONLY_OVERRIDES, "reinforcement jobs")
    if not sft and request.algorithm != "grpo":
        return settings
    for dpo_only in ("beta", "loss_types", "loss_weights", "reference_strategy"):
        del settings[dpo_only]
    _refuse_overrides(request, DPO_ONLY_OVERRIDES, "DPO")
    if request.algorithm == "grpo":
        return {**settings, **_grpo_settings(request, job, batch_size, num_processes)}
    return {
        **settings,
        "algorithm": "sft",
        "lora": _sft_lora(request.lora, job, device, request.overrides),
        "completion_only_loss": not _flag(request.train_on_input, default=False),
        "padding_free": _flag(request.packed, default=False) if request.packed is not None else job.padding_free,
    }


def _refuse_overrides(request: JobRequest, only: frozenset[str], applies_to: str) -> None:
    given = sorted(set(request.overrides.value) & only) if isinstance(request.overrides.value, dict) else []
    if given:
        raise RequestError(
            request.overrides.field,
            f"{given} apply to {applies_to} only; leave them out of this {request.algorithm} job",
        )


# -- reinforcement (GRPO) ---------------------------------------------------------------------------------------
def _grpo_settings(
    request: JobRequest, job: TrlPostTrainingConfig, batch_size: int, num_processes: int
) -> dict[str, Any]:
    """A reinforcement job's sampling and loss settings, from the provider config (and its per-job overrides) and
    the request's compute_multiplier, eval_samples and grader."""
    multiplier = (
        1.0 if request.compute_multiplier is None else _number(request.compute_multiplier, MAX_COMPUTE_MULTIPLIER)
    )
    num_generations = round(job.num_generations * multiplier)
    if num_generations < 2 or num_generations > MAX_GENERATIONS:
        field = request.compute_multiplier.field if request.compute_multiplier else f"{request.overrides.field}"
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
        num_generations if request.eval_samples is None else _positive_int(request.eval_samples, MAX_GENERATIONS)
    )
    if request.grader is None:
        raise RequestError("grader", "a reinforcement job needs a grader: the object that scores each sampled answer")
    grader_settings = GraderSettings.from_config(job)
    compile_grader(request.grader.value, grader_settings, field=request.grader.field)  # as graders/validate checks it
    return {
        "algorithm": "grpo",
        "grader": request.grader.value,
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
    request: JobRequest, settings: dict[str, Any], model: str, num_prompts: int, validates: bool
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
    if request.eval_interval is not None:
        if not validates:
            raise RequestError(
                request.eval_interval.field, "validation runs on a validation file; give one, or leave it out"
            )
        eval_steps = _positive_int(request.eval_interval, MAX_STEPS)
    elif validates:  # once an epoch
        eval_steps = max(num_prompts // batch_size, 1)
        if settings["max_steps_per_epoch"]:
            eval_steps = min(eval_steps, settings["max_steps_per_epoch"])
    return {"eval_steps": eval_steps, "chat_template_kwargs": _reasoning_effort(request.reasoning_effort, model)}


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


# -- job_uuid, model ----------------------------------------------------------------------------------------------
def job_dir_for(output_root: Path, job_uuid: Given[str]) -> Path:
    """The job's directory, guaranteed to be a direct child of ``output_root``."""
    if not isinstance(job_uuid.value, str) or not JOB_UUID_PATTERN.match(job_uuid.value):
        raise RequestError(
            job_uuid.field,
            f"{job_uuid.value!r} is not allowed; use 1-128 characters from A-Z a-z 0-9 . _ - starting with a letter "
            "or digit (it names the job's directory)",
        )
    job_dir = (output_root / job_uuid.value).resolve()
    if job_dir.parent != output_root:
        raise RequestError(job_uuid.field, f"{job_uuid.value!r} does not name a directory inside the output directory")
    return job_dir


def check_model(model: Given[str], config: TrlPostTrainingConfig, output_root: Path, caller: Caller) -> str:
    """A local model directory as its real path (the job runs in its own directory), else the name as given (a
    Hugging Face Hub id)."""
    name = model.value
    if not isinstance(name, str) or not name.strip():
        raise RequestError(model.field, "is empty; give a Hugging Face model id or a local model directory")
    if len(name) > MAX_MODEL_CHARS:
        raise RequestError(
            model.field, f"{len(name)} characters; at most {MAX_MODEL_CHARS}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )
    if any(len(part) > MAX_PATH_COMPONENT_CHARS for part in name.split("/")):
        raise RequestError(model.field, f"a path component is over {MAX_PATH_COMPONENT_CHARS} characters")
    local = Path(name).expanduser()
    # unlike Path.is_dir, os.path.isdir is False (not an error) for a name too long
    if not (name.startswith(("/", "./", "../", "~")) or ".." in local.parts or os.path.isdir(local)):
        return name
    real = Path(os.path.realpath(local))
    _check_model_location(model, real, config.allowed_model_dirs, output_root, caller)
    if not real.is_dir():
        raise RequestError(model.field, f"local model directory '{name}' does not exist")
    _check_model_files(model, real, config, output_root, caller)
    return str(real)


def _check_model_location(
    model: Given[str], real: Path, allowed_dirs: list[str] | None, output_root: Path, caller: Caller
) -> None:
    """Where a local model may be: in the directory of an earlier job the caller may read, or anywhere but the
    output directory when the server sets no allowed_model_dirs, else inside one of them. The same answer
    whether or not another user's job exists at that path."""
    if real.is_relative_to(output_root):
        job = real.relative_to(output_root).parts[:1]
        if job and caller.may_read_job(job[0]):
            return
        if allowed_dirs is None:
            raise RequestError(
                model.field,
                f"'{model.value}' is inside the server's output directory but not inside a job of yours; name one of "
                "your jobs' checkpoints (job artifacts lists their paths)",
                HTTPStatus.FORBIDDEN,
            )
    elif allowed_dirs is None or any(real.is_relative_to(os.path.realpath(Path(d).expanduser())) for d in allowed_dirs):
        return
    raise RequestError(
        model.field,
        f"'{model.value}' (symlinks resolved) is outside the directories this server trains local models from "
        f"(allowed_model_dirs: {', '.join(allowed_dirs)}); put the model in one of them, or name one of your jobs' "
        "checkpoints",
        HTTPStatus.FORBIDDEN,
    )


def _check_model_files(
    model: Given[str], directory: Path, config: TrlPostTrainingConfig, output_root: Path, caller: Caller
) -> None:
    """A model directory as save_pretrained writes it: config.json, and the weights beside it. Or a LoRA adapter
    (an earlier job's ``final`` checkpoint), merged into its base model before training: the base obeys the same
    rules as a model the request names."""
    adapter_config = directory / ADAPTER_CONFIG_FILE
    if not (directory / "config.json").is_file() and adapter_config.is_file():
        try:
            base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError) as exc:
            raise RequestError(model.field, f"'{model.value}' is a LoRA adapter without a readable base model") from exc
        base_field = f"{model.field} (its adapter's base_model_name_or_path)"
        check_model(Given(str(base), base_field), config, output_root, caller)
        return
    if not (directory / "config.json").is_file():
        raise RequestError(
            model.field,
            f"'{model.value}' is not a model directory: it has no config.json; give a directory save_pretrained wrote",
        )
    if not any(directory.glob("*.safetensors")) and not any(directory.glob("pytorch_model*.bin")):
        raise RequestError(
            model.field,
            f"'{model.value}' has a config.json but no weights beside it (*.safetensors or pytorch_model*.bin)",
        )


# -- numbers and flags ------------------------------------------------------------------------------------------
def _positive_int(given: Given[int], limit: int) -> int:
    value = given.value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RequestError(given.field, f"must be a positive integer, got {value}")
    _at_most(given, limit)
    return value


def _number(given: Given[float], limit: float, zero_ok: bool = False) -> float:
    """A finite number above 0 (or at least 0, with ``zero_ok``), at most ``limit``."""
    value = given.value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError(given.field, f"must be a number, got {value!r}")
    if zero_ok and (not math.isfinite(value) or value < 0):
        raise RequestError(given.field, f"must be a finite number >= 0, got {value}")
    if not zero_ok and (not math.isfinite(value) or value <= 0):
        raise RequestError(given.field, f"must be a finite number > 0, got {value}")
    _at_most(given, limit)
    return float(value)


def _number_or(given: Given[float] | None, limit: float, default: float) -> float:
    """A number at least 0 when given, else the provider config's ``default``."""
    return default if given is None else _number(given, limit, zero_ok=True)


def _at_most(given: Given[float], limit: float) -> None:
    if given.value > limit:
        raise RequestError(given.field, f"{given.value} is above the limit of {limit:g}")


def _flag(given: Given[bool] | None, default: bool) -> bool:
    if given is None:
        return default
    if not isinstance(given.value, bool):
        raise RequestError(given.field, f"must be true or false, got {given.value!r}")
    return given.value


def _refuse_if_set(given: Given[bool] | None, why: str) -> None:
    if _flag(given, default=False):
        assert given is not None
        raise RequestError(given.field, why)


# -- algorithm ------------------------------------------------------------------------------------------------
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


# -- data -------------------------------------------------------------------------------------------------------
def _check_dataset_id(dataset_id: Given[str]) -> None:
    if not isinstance(dataset_id.value, str) or not dataset_id.value:
        raise RequestError(
            dataset_id.field,
            "is required: give dataset_id (a dataset registered with purpose post-training/messages) and batch_size",
        )
    if len(dataset_id.value) > MAX_DATASET_ID_CHARS:
        raise RequestError(
            dataset_id.field, f"over {MAX_DATASET_ID_CHARS} characters", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )


def _check_data_format(data_format: Given[str] | None) -> None:
    if data_format is not None and data_format.value not in SHAPE_OF_DATA_FORMAT:
        raise RequestError(
            data_format.field,
            f"unknown data format {data_format.value!r}; use instruct (strings) or dialog (lists of messages)",
        )


async def _checked_rows[R](
    dataset_id: Given[str],
    data_format: Given[str] | None,
    config: TrlPostTrainingConfig,
    sources: RequestSources,
    check: Callable[[str, list[dict[str, Any]], str | None], R],
) -> R:
    """The dataset's rows as ``check`` (the algorithm's row checks) returns them; its RowError names the field."""
    # One row over the limit is enough to refuse an oversize dataset without reading all of it.
    rows = await sources.dataset_rows(dataset_id, limit=config.max_train_rows + 1)
    _check_dataset_size(dataset_id, rows, config.max_train_rows, config.max_field_chars)
    try:
        return check(dataset_id.value, rows, data_format.value if data_format else None)
    except RowError as exc:
        raise RequestError(dataset_id.field, str(exc)) from exc


async def _preference_rows(
    dataset_id: Given[str], data_format: Given[str] | None, config: TrlPostTrainingConfig, sources: RequestSources
) -> PreferenceRows:
    return await _checked_rows(dataset_id, data_format, config, sources, check_preference_rows)


async def _sft_rows(
    dataset_id: Given[str], data_format: Given[str] | None, config: TrlPostTrainingConfig, sources: RequestSources
) -> SFTRows:
    return await _checked_rows(dataset_id, data_format, config, sources, check_sft_rows)


async def _validation_rows(
    request: JobRequest, train: PreferenceRows, config: TrlPostTrainingConfig, sources: RequestSources
) -> PreferenceRows | None:
    validation = request.validation_dataset_id
    if validation is None:
        return None
    evaluation = await _preference_rows(validation, request.data_format, config, sources)
    if (evaluation.shape, evaluation.implicit_prompt) != (train.shape, train.implicit_prompt):
        raise RequestError(
            validation.field,
            f"its rows ({evaluation.shape}, fields {list(evaluation.fields)}) differ from the training rows "
            f"({train.shape}, fields {list(train.fields)}); use one format for both",
        )
    return evaluation


async def _sft_validation_rows(
    request: JobRequest, train: SFTRows, config: TrlPostTrainingConfig, sources: RequestSources
) -> SFTRows | None:
    validation = request.validation_dataset_id
    if validation is None:
        return None
    evaluation = await _sft_rows(validation, request.data_format, config, sources)
    if sorted(evaluation.rows[0]) != sorted(train.rows[0]) or evaluation.conversational != train.conversational:
        raise RequestError(
            validation.field,
            f"its rows ({evaluation.format}) train differently from the training rows ({train.format}); use one "
            "format for both",
        )
    return evaluation


def _check_dataset_size(dataset_id: Given[str], rows: list[dict[str, Any]], max_rows: int, max_chars: int) -> None:
    """``rows`` may hold one row more than ``max_rows``: that is how an oversize dataset is noticed."""
    if len(rows) > max_rows:
        raise RequestError(
            dataset_id.field,
            f"dataset '{dataset_id.value}' has more than {max_rows} rows (the max_train_rows limit)",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    for index, row in enumerate(rows):
        for name, value in row.items():
            chars = _characters(value)
            if chars > max_chars:
                raise RequestError(
                    dataset_id.field,
                    f"dataset '{dataset_id.value}' row {index}: field '{name}' has {chars} characters; at most "
                    f"{max_chars} (max_field_chars)",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )


def _characters(value: Any) -> int:
    """A string's length; a list of messages counts every message's content."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(m["content"]) for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))
    return 0


# -- optimizer, precision ---------------------------------------------------------------------------------------
def _optimizer(given: Given[str] | None) -> str:
    if given is None:
        return "adamw"
    if given.value not in OPTIMIZERS:
        raise RequestError(given.field, f"unknown optimizer {given.value!r}; use one of {', '.join(OPTIMIZERS)}")
    return given.value


def _warmup_steps(given: Given[int]) -> int:
    return int(_number(given, MAX_WARMUP_STEPS, zero_ok=True))


def _precision(dtype: Given[str] | None, config: TrlPostTrainingConfig, device: str) -> Precision:
    if dtype is None:
        precision = _MIXED_PRECISION[config.mixed_precision]
    else:
        precision = _DTYPES.get(str(dtype.value).lower())
        if precision is None:
            raise RequestError(dtype.field, f"unknown dtype {dtype.value!r}; use bf16, fp16 or fp32")
    try:
        check_precision(device, precision)
    except ValueError as exc:
        raise RequestError(dtype.field if dtype else "mixed_precision", str(exc)) from exc
    return precision


# -- per-job overrides of the provider config -------------------------------------------------------------------
def job_config(config: TrlPostTrainingConfig, overrides: Given[dict[str, Any]]) -> TrlPostTrainingConfig:
    """The provider config with the request's per-job overrides applied."""
    if not overrides.value:
        return config
    if not isinstance(overrides.value, dict):
        raise RequestError(overrides.field, f"must be an object of provider config keys, got {overrides.value!r}")
    unknown = sorted(set(overrides.value) - PER_JOB_FIELDS)
    if unknown:
        raise RequestError(
            overrides.field,
            f"unknown or not per-job keys {unknown}; a job may override: {', '.join(sorted(PER_JOB_FIELDS))}",
        )
    try:
        return TrlPostTrainingConfig.model_validate({**config.model_dump(), **overrides.value})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}" for error in exc.errors()
        )
        raise RequestError(overrides.field, problems) from exc


def _reference_strategy(job: TrlPostTrainingConfig) -> ReferenceStrategy:
    if not job.use_reference_model:
        return "precomputed_log_probs"
    return "adapters_disabled" if job.use_lora else "frozen_copy"


def _lora(job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]) -> LoraSpec | None:
    if not job.use_lora:
        return None
    if job.qlora:
        _check_qlora(f"{overrides.field}.qlora", device)
    return LoraSpec(
        rank=job.lora_rank,
        alpha=job.lora_alpha,
        dropout=job.lora_dropout,
        target_modules=job.lora_target_modules,
        quantize_4bit=job.qlora,
        merge_adapter=job.merge_adapter,
    )


def _check_qlora(field: str, device: str) -> None:
    if not device.startswith("cuda"):
        raise RequestError(field, f"4-bit QLoRA needs a CUDA device, this server trains on {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RequestError(field, "4-bit QLoRA needs bitsandbytes: pip install bitsandbytes")


def _sft_lora(
    lora: LoraRequest | None, job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]
) -> LoraSpec | None:
    """SFT's LoRA from the request's LoRA config (its layer names are mapped once the model's files are known);
    without one, the provider config's (use_lora), else a full fine-tune. An SFT adapter is merged into a full
    model too (``final-merged``) unless the request's overrides say merge_adapter: false."""
    if lora is None:
        return _lora(job, device, overrides)
    quantize = _flag(lora.quantize_base, default=False)
    if quantize:
        _check_qlora(lora.quantize_base.field if lora.quantize_base else "quantize_base", device)
    names = lora.attn_modules.value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise RequestError(lora.attn_modules.field, f"must be a list of layer names, got {names!r}")
    return LoraSpec(
        rank=_positive_int(lora.rank, MAX_LORA_RANK),
        alpha=_number(lora.alpha, MAX_LORA_ALPHA),
        dropout=job.lora_dropout,
        target_modules=names,
        use_dora=_flag(lora.use_dora, default=False),
        quantize_4bit=quantize,
        merge_adapter=overrides.value.get("merge_adapter", True) is not False,
    )


def _pad_multiple(job: TrlPostTrainingConfig, device: str) -> int | None:
    if job.pad_to_multiple_of == "auto":  # a job that runs packed pads nothing: the recipe knows if it does
        return AUTO_PAD_MULTIPLE_CUDA if device.startswith("cuda") else None
    return job.pad_to_multiple_of


def _master_weights(job: TrlPostTrainingConfig, precision: Precision, overrides: Given[dict[str, Any]]) -> str:
    if job.master_weights == "optimizer" and precision == "fp16":
        raise RequestError(
            f"{overrides.field}.master_weights",
            "optimizer needs bf16 (fp16 weights would need loss scaling) and this job runs in fp16; ask for "
            "training_config.dtype bf16, or master_weights: model",
        )
    return job.master_weights


def _torch_compile(job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]) -> bool:
    """torch.compile needs a C++ compiler to build CPU kernels and Triton to build CUDA ones."""
    if not job.torch_compile:
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
        raise RequestError(f"{overrides.field}.torch_compile", f"{problem}; set torch_compile: false")
    return True


# -- what the request names: the model's files ------------------------------------------------------------------
async def _registered_model(
    model: Given[str], sources: RequestSources, config: TrlPostTrainingConfig, output_root: Path, caller: Caller
) -> str:
    """A model registered with the front door's stack trains from its files, which obey the same rules as a path
    the request names; a local directory or an unregistered name is used as it is."""
    if Path(model.value).is_absolute():
        return model.value
    path = await sources.registered_model_path(model.value)
    return model.value if path is None else check_model(Given(path, model.field), config, output_root, caller)


def _checkpoint_model(
    model: Given[str],
    checkpoint_path: Callable[[str], str | None],
    config: TrlPostTrainingConfig,
    output_root: Path,
    caller: Caller,
) -> str | None:
    """The directory of the earlier job's checkpoint ``model`` names, or None when it names none the caller may
    read (another user's answers as one that does not exist). The path comes from the job's record, is used only
    inside the output directory, and obeys the rules of a path the request names."""
    path = checkpoint_path(model.value)
    if path is None:
        return None
    resolved = Path(path).resolve()
    if resolved.is_relative_to(output_root) and not caller.may_read_job(resolved.relative_to(output_root).parts[0]):
        return None
    if not resolved.is_relative_to(output_root) or not resolved.is_dir():
        raise RequestError(model.field, f"checkpoint '{model.value}' is no longer in the output directory")
    return check_model(Given(str(resolved), model.field), config, output_root, caller)


def _check_adapter_base(request: JobRequest, model: str, lora: LoraSpec | None) -> None:
    """An adapter checkpoint is merged into its base when loaded; a 4-bit base cannot take that merge."""
    if lora is not None and lora.quantize_4bit and (Path(model) / ADAPTER_CONFIG_FILE).is_file():
        raise RequestError(
            request.model.field,
            f"'{request.model.value}' is a LoRA adapter, which is merged into its base model before training, and a "
            "4-bit QLoRA base cannot be merged into; start from the job's '-final-merged' checkpoint instead",
        )


def _lora_targets(lora: LoraRequest, model: str) -> list[str]:
    try:
        return lora_target_modules(model, lora.attn_modules.value, mlp=lora.mlp.value, output=lora.output.value)
    except UnknownLoraModule as exc:
        raise RequestError(lora.attn_modules.field, str(exc)) from exc


def _check_chat_template(dataset_id: Given[str], model: str, conversational: bool, strings: str) -> None:
    if conversational and has_chat_template(model) is False:
        raise RequestError(
            dataset_id.field,
            f"the rows are conversational (lists of messages) but the tokenizer of '{model}' has no chat template to "
            f"render them; give rows as {strings} (data_format 'instruct'), or a model whose tokenizer has a chat "
            "template",
        )


def _check_packing_window(
    model: str, padding_free: bool | str, max_seq_length: int, overrides: Given[dict[str, Any]]
) -> None:
    window = sliding_window(model) if padding_free is True else None  # auto runs such a model padded
    if window is not None and window < max_seq_length:
        raise RequestError(
            f"{overrides.field}.padding_free",
            f"'{model}' attends within a sliding window of {window} tokens, shorter than max_seq_length "
            f"{max_seq_length}, and packed sequences cannot keep that window; set padding_free false (provider "
            f"config or {overrides.field}), or max_seq_length {window} or less",
        )


# -- what the job takes: disk, queue ------------------------------------------------------------------------------
def _check_disk_space(spec: DPOJobSpec, output_root: Path) -> None:
    estimate = estimate_checkpoints(spec)
    space = disk_space(output_root)
    if estimate is None or space is None or estimate.total <= space[0]:
        return
    raise RequestError(
        "output_dir",
        f"the job's checkpoints would take about {format_bytes(estimate.total)} ({estimate.describe()}) and the disk "
        f"holding {output_root} has {format_bytes(space[0])} free; keep fewer epoch checkpoints "
        "(hyperparam_search_config save_total_limit, or save_every_epoch: false) or train LoRA adapters (use_lora: "
        "true), or ask the server's operator for space (check_disk_space: false turns this check off)",
        HTTPStatus.INSUFFICIENT_STORAGE,
    )


def _check_queue_share(caller: Caller, limit: int | None) -> None:
    if limit is None:
        return
    queued = caller.queued_jobs()
    if queued >= limit:
        raise RequestError(
            "max_queued_jobs_per_user",
            f"{queued} of your jobs already wait to start, the most this server queues for one user; send this again "
            "when one of them has started, or cancel one",
            HTTPStatus.TOO_MANY_REQUESTS,
        )
