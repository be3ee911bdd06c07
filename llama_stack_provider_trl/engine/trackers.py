"""logger_config: which experiment trackers a job reports to, checked at request time.

    {"tensorboard": {}}                                         event files in <job_dir>/tensorboard
    {"mlflow": {"experiment_name": "dpo", "tracking_uri": "http://mlflow:5000"}}
    {"wandb": {"project": "dpo", "mode": "offline"}}

A tracker is on with ``{}`` (or ``true``) and its defaults, off when absent (or ``false``). Each run is named
after the job (its job_uuid). The training process
reports through transformers' own integration callbacks (the ones ``report_to`` would add), each guarded so that
a tracker failing never fails the training (recipes/trackers.py).
"""

import importlib.util
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.job_spec import MlflowSpec, TrackersSpec, WandbSpec
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given

MLFLOW_DB = "mlflow.db"
DEFAULT_EXPERIMENT = "llama-stack-trl"
MAX_NAME_CHARS = 256
# What each tracker takes, and the packages it needs on the server (the extra that installs them).
OPTIONS: dict[str, tuple[str, ...]] = {
    "tensorboard": (),
    "mlflow": ("tracking_uri", "experiment_name"),
    "wandb": ("project", "mode"),
}
PACKAGES: dict[str, tuple[str, ...]] = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow",), "wandb": ("wandb",)}
WANDB_MODES = ("offline", "online")


def check_logger_config(
    logger_config: Given[dict[str, Any]] | None, *, job_dir: Path, server_mlflow_uri: str | None
) -> TrackersSpec:
    """The trackers ``logger_config`` asks for, or RequestError naming the first bad key (``logger_config.x.y``)."""
    if logger_config is None:
        return TrackersSpec()
    asked, field = logger_config.value, logger_config.field
    if not isinstance(asked, dict):
        raise RequestError(field, f"must be an object of trackers ({', '.join(OPTIONS)}), got {asked!r}")
    options: dict[str, dict[str, str]] = {}
    for name, value in asked.items():
        if name not in OPTIONS:
            raise RequestError(f"{field}.{name}", f"unknown tracker; logger_config takes {', '.join(OPTIONS)}")
        given = _options(value, name, f"{field}.{name}")
        if given is None:
            continue
        missing = [package for package in PACKAGES[name] if importlib.util.find_spec(package) is None]
        if missing:
            raise RequestError(
                f"{field}.{name}",
                f"{missing[0]} is not installed on the server; install llama-stack-provider-trl[{name}] there",
            )
        options[name] = given
    mlflow = options.get("mlflow")
    wandb = options.get("wandb")
    return TrackersSpec(
        tensorboard="tensorboard" in options,
        mlflow=None if mlflow is None else _mlflow(mlflow, f"{field}.mlflow", job_dir, server_mlflow_uri),
        wandb=None if wandb is None else _wandb(wandb, f"{field}.wandb"),
    )


def _options(value: Any, name: str, field: str) -> dict[str, str] | None:
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise RequestError(field, f"must be an object of options ({', '.join(OPTIONS[name]) or 'none'}) or true")
    for key, option in value.items():
        if key not in OPTIONS[name]:
            takes = f"takes {', '.join(OPTIONS[name])}" if OPTIONS[name] else "takes no options: send {}"
            raise RequestError(f"{field}.{key}", f"unknown option; {name} {takes}")
        if not isinstance(option, str) or not option or len(option) > MAX_NAME_CHARS:
            raise RequestError(f"{field}.{key}", f"must be a string of 1 to {MAX_NAME_CHARS} characters")
    return value


def _mlflow(options: dict[str, str], field: str, job_dir: Path, server_uri: str | None) -> MlflowSpec:
    uri = options.get("tracking_uri")
    if uri is not None and not uri.startswith(("http://", "https://")):
        # A request may not point the server at files of its choosing: local stores are the server owner's.
        raise RequestError(
            f"{field}.tracking_uri",
            f"{uri!r} is not an http(s) tracking server; leave it out to record in the server's store "
            f"({server_uri or 'the job directory'})",
        )
    uri = uri or server_uri or f"sqlite:///{job_dir / MLFLOW_DB}"
    if uri.startswith("sqlite:") and importlib.util.find_spec("alembic") is None:
        raise RequestError(field, "alembic is not installed on the server; install llama-stack-provider-trl[mlflow]")
    return MlflowSpec(tracking_uri=uri, experiment_name=options.get("experiment_name", DEFAULT_EXPERIMENT))


def _wandb(options: dict[str, str], field: str) -> WandbSpec:
    mode = options.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise RequestError(f"{field}.mode", f"{mode!r}; use offline (the run stays in the job's directory) or online")
    return WandbSpec(project=options.get("project", DEFAULT_EXPERIMENT), mode=mode)
