"""Admission: every check of a training request, in the order of the request's fields, then the job spec.

``admit`` takes a JobRequest (a front door's request in the engine's terms, each value with the caller's name for
its field) and returns the job to write and submit, or raises RequestError naming the caller's field and the fix.
It checks every value before any I/O (types, lower and upper bounds, the provider config's per-job overrides),
then reads what the request names through the front door's ``RequestSources`` (the model, the datasets' rows)
and checks that, and builds the spec once. Nothing here creates a file or a process.

What every job shares is checked here (the job's name, engine/model_source.py, engine/training_settings.py,
engine/training_data.py, the disk and the queue); the request's algorithm (algorithms/) checks its own fields,
settings and rows.

Upper bounds stop requests that would run for years, exhaust memory or disk, or name a path no file system
accepts: out-of-range values are 400, oversize input 413. A local model must be a model directory, inside the
server's ``allowed_model_dirs`` when it sets them (403 outside). Last, with the spec built: a job whose
job that would log more steps or keep more checkpoints than the operator allows is 400, one whose files (with what
the unfinished jobs before it still write) cannot fit on the output directory's disk 507, and one more unfinished
job than the caller may have 429.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llama_stack_provider_trl.algorithms import ALGORITHMS, Algorithm
from llama_stack_provider_trl.common.job_spec import JobSpecBase
from llama_stack_provider_trl.config import PER_JOB_FIELDS, TrlPostTrainingConfig
from llama_stack_provider_trl.engine.disk_space import (
    disk_space,
    format_bytes,
    jsonl_bytes,
    kept_epoch_checkpoints,
    room_needed,
    total_steps,
)
from llama_stack_provider_trl.engine.distributed import (
    check_strategy_combination,
    resolve_num_processes,
    resolve_strategy,
)
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import NO_USERS, Caller, Given, JobRequest, RequestSources
from llama_stack_provider_trl.engine.model_source import (
    check_adapter_base,
    check_chat_template,
    check_model,
    check_packing_window,
    checkpoint_model,
    registered_model,
)
from llama_stack_provider_trl.engine.trackers import check_trackers
from llama_stack_provider_trl.engine.training_data import check_data_format, check_dataset_id
from llama_stack_provider_trl.engine.training_settings import (
    lora,
    master_weights,
    optimizer,
    pad_multiple,
    precision,
    torch_compile,
    warmup_steps,
)
from llama_stack_provider_trl.engine.values import flag, number, number_or, positive_int, refuse_if_set

JOB_UUID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_N_EPOCHS = 10_000
MAX_STEPS = 10_000_000  # per epoch
MAX_ACCUMULATION = 65_536  # gradient accumulation steps
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0


@dataclass(frozen=True)
class AdmittedJob:
    """A request that passed every check: the spec its process runs and the rows it trains and evaluates on."""

    spec: JobSpecBase
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
    caller: Caller = NO_USERS,
    checkpoint_path: Callable[[str], str | None] = lambda _: None,
    unfinished: Callable[[], list[JobSpecBase]] = lambda: [],
) -> AdmittedJob:
    """``checkpoint_path``: the directory of an earlier job's checkpoint by its identifier (``<job_uuid>-final``,
    ``<job_uuid>-final-merged``, ``<job_uuid>-epoch-<n>``, as the artifacts list gives them), or None.
    ``unfinished``: the specs of every job accepted and not finished (queued, paused, running), whose files are still
    to come on the same disk."""
    algorithm = ALGORITHMS[request.method.algorithm]
    settings = check_request(
        request, config, output_root=output_root, device=device, job_exists=job_exists, caller=caller
    )
    given = Given(settings["model"], request.model.field)
    model = checkpoint_model(given, checkpoint_path, config, output_root, caller)
    if model is None:
        model = await registered_model(given, sources, config, output_root, caller)
    settings["model"] = model
    check_adapter_base(request, model, settings["lora"])
    rows = await algorithm.rows(request, config, sources)
    check_chat_template(request.dataset_id, model, rows.conversational, rows.strings)
    algorithm.finish(request, settings, model, rows)
    check_packing_window(model, settings["padding_free"], settings["max_seq_length"], request.overrides)
    spec = algorithm.spec_type(**settings, num_rows=len(rows.train), num_eval_rows=len(rows.eval or ()))
    _check_job_size(spec, config, request.overrides.field)
    # After the last await: the engine submits before any other request can be admitted, so the unfinished jobs
    # counted here are every one accepted before this one.
    if config.check_disk_space:
        _check_disk_space(spec, rows.train, rows.eval, output_root, unfinished())
    check_user_share(caller.unfinished_jobs(), config.max_queued_jobs_per_user)
    return AdmittedJob(spec=spec, train_rows=rows.train, eval_rows=rows.eval)


def check_request(
    request: JobRequest,
    config: TrlPostTrainingConfig,
    *,
    output_root: Path,
    device: str,
    job_exists: Callable[[str], bool] = lambda _: False,
    caller: Caller = NO_USERS,
) -> dict[str, Any]:
    """Every value of the request, checked and resolved against the provider config before any I/O: the job
    spec's fields but the rows (``model`` is the name as given, or a local directory made absolute)."""
    algorithm = ALGORITHMS[request.method.algorithm]
    job_dir = job_dir_for(output_root, request.job_uuid)
    if job_exists(request.job_uuid.value):
        raise RequestError(
            request.job_uuid.field,
            f"a job named '{request.job_uuid.value}' already exists; choose another {request.job_uuid.field}",
            HTTPStatus.CONFLICT,
        )
    model = check_model(request.model, config, output_root, caller)
    algorithm.check_fields(request.method)
    n_epochs = positive_int(request.n_epochs, MAX_N_EPOCHS)
    max_steps = None if request.max_steps_per_epoch is None else positive_int(request.max_steps_per_epoch, MAX_STEPS)
    accumulation = request.gradient_accumulation_steps
    gradient_accumulation_steps = 1 if accumulation is None else positive_int(accumulation, MAX_ACCUMULATION)
    check_dataset_id(request.dataset_id)
    batch_size = positive_int(request.batch_size, MAX_BATCH_SIZE)
    shuffle = flag(request.shuffle, default=True)
    check_data_format(request.data_format)
    if request.validation_dataset_id is not None:
        check_dataset_id(request.validation_dataset_id)
    chosen_optimizer = optimizer(request.optimizer)
    learning_rate = config.learning_rate if request.learning_rate is None else number(request.learning_rate, MAX_LR)
    weight_decay = number_or(request.weight_decay, MAX_WEIGHT_DECAY, config.weight_decay)
    warmup = config.warmup_steps if request.warmup_steps is None else warmup_steps(request.warmup_steps)
    refuse_if_set(
        request.fsdp,
        f"these FSDP1 options do not apply; set them false and ask for FSDP2 with {request.overrides.field} "
        "num_processes and distributed_strategy: fsdp2",
    )
    job_precision = precision(request.dtype, config, device)
    job = job_config(config, request.overrides)  # the provider config with this job's overrides
    _check_overrides_apply(algorithm, request.overrides)
    trackers = check_trackers(
        request.trackers,
        job_dir=job_dir,
        server_mlflow_uri=config.mlflow_tracking_uri,
        tracker_hosts=config.tracker_hosts,
    )
    num_processes = resolve_num_processes(job, device, request.batch_size, request.overrides.field)
    strategy = resolve_strategy(job, device, num_processes, model, request.overrides.field)
    config_lora = lora(job, device, request.overrides)
    # auto packs where it can; FSDP2 shards the attention the packing would replace
    padding_free = False if strategy == "fsdp2" and job.padding_free == "auto" else job.padding_free
    job_master_weights = master_weights(job, job_precision, request.overrides)
    compile_layers = torch_compile(job, device, request.overrides)
    check_strategy_combination(
        strategy,
        lora=config_lora,
        padding_free=padding_free,
        torch_compile=compile_layers,
        master_weights=job_master_weights,
        overrides=request.overrides.field,
    )
    settings = {
        "algorithm": algorithm.name,
        "job_uuid": request.job_uuid.value,
        "model": model,
        "job_dir": str(job_dir),
        "device": device,
        "precision": job_precision,
        "lora": config_lora,
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
        "warmup_steps": warmup,
        "optimizer": chosen_optimizer,
        "max_seq_length": job.max_seq_length,
        "pad_to_multiple_of": pad_multiple(job, device),
        "group_by_length": job.group_by_length,
        "padding_free": padding_free,
        "master_weights": job_master_weights,
        "torch_compile": compile_layers,
        "gradient_checkpointing": flag(request.gradient_checkpointing, default=job.gradient_checkpointing),
        "activation_offloading": flag(request.activation_offloading, default=False),
        "logging_steps": job.logging_steps,
        "save_every_epoch": job.save_every_epoch,
        "save_total_limit": job.save_total_limit,
        "seed": job.seed,
        "trust_remote_code": job.trust_remote_code,
        "trackers": trackers,
    }
    return settings | algorithm.settings(request, job, settings)


def _check_overrides_apply(algorithm: Algorithm, overrides: Given[dict[str, Any]]) -> None:
    """Provider config keys another algorithm reads mean nothing to this one: refused, not silently ignored."""
    for other in ALGORITHMS.values():
        foreign = sorted(set(overrides.value or {}) & (other.config_fields - algorithm.config_fields))
        if foreign:
            raise RequestError(
                overrides.field, f"{foreign} apply to {other.title} only; leave them out of this {algorithm.title} job"
            )


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


def _check_disk_space(
    spec: JobSpecBase,
    rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None,
    output_root: Path,
    unfinished: list[JobSpecBase],
) -> None:
    space = disk_space(output_root)
    if space is None:
        return
    needed = room_needed(spec, jsonl_bytes(rows) + jsonl_bytes(eval_rows or []), unfinished)
    if needed.total <= space[0]:
        return
    raise RequestError(
        "output_dir",
        f"the job needs about {format_bytes(needed.total)} ({needed.describe()}) and the disk holding {output_root} "
        f"has {format_bytes(space[0])} free; keep fewer epoch checkpoints (save_total_limit, or save_every_epoch: "
        "false) or train LoRA adapters (use_lora: true), wait for queued jobs to finish, or ask the server's operator "
        "for space (check_disk_space: false turns this check off)",
        HTTPStatus.INSUFFICIENT_STORAGE,
    )


def _check_job_size(spec: JobSpecBase, config: TrlPostTrainingConfig, overrides: str) -> None:
    """What a job keeps: its logged steps (each an event the server reads, lists and draws) and its epoch checkpoints,
    within the operator's bounds."""
    steps = total_steps(spec)
    logged = math.ceil(steps / spec.logging_steps)
    if logged > config.max_logged_steps_per_job:
        needed = math.ceil(steps / config.max_logged_steps_per_job)
        raise RequestError(
            f"{overrides}.logging_steps",
            f"logging every {spec.logging_steps} of up to {steps} steps logs {logged} steps, more than the "
            f"{config.max_logged_steps_per_job} this server keeps for a job (max_logged_steps_per_job); set "
            f"logging_steps to {needed} or more",
        )
    kept = kept_epoch_checkpoints(spec)
    if kept > config.max_checkpoints_per_job:
        raise RequestError(
            f"{overrides}.save_total_limit",
            f"the job would keep {kept} epoch checkpoints, more than the {config.max_checkpoints_per_job} this server "
            f"keeps for a job (max_checkpoints_per_job); set save_total_limit to {config.max_checkpoints_per_job} or "
            "less, or save_every_epoch: false",
        )


def check_user_share(unfinished: int, limit: int | None) -> None:
    """Refuse (429) one more unfinished job for a user who has ``unfinished`` of them: on a new job, and on resume
    (pausing a job frees no room)."""
    if limit is not None and unfinished >= limit:
        raise RequestError(
            "max_queued_jobs_per_user",
            f"{unfinished} of your jobs are queued, paused or running, the most this server keeps for one user; send "
            "this again when one of them has finished, or cancel one",
            HTTPStatus.TOO_MANY_REQUESTS,
        )
