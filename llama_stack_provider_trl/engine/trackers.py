"""Which experiment trackers a job reports to, checked at request time.

A front door names them its own way; both come here as TrackerRequests:

    0.6.1 logger_config   {"tensorboard": {}, "wandb": {"project": "dpo", "mode": "offline"}}
    OGX integrations      [{"type": "wandb", "wandb": {"project": "dpo", "name": "run 1", "tags": ["a"]}},
                           {"type": "mlflow", "mlflow": {"experiment_name": "dpo"}}, {"type": "tensorboard"}]

A tracker is on with ``{}`` (or ``true``) and its defaults, off when absent (or ``false``). Each run is named
after the job (its job_uuid) unless W&B's ``name`` says otherwise. The training process reports through
transformers' own integration callbacks (the ones ``report_to`` would add), each guarded so that a tracker
failing never fails the training (recipes/trackers.py).
"""

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.job_spec import MlflowSpec, TrackersSpec, WandbSpec
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import TrackerRequest
from llama_stack_provider_trl.engine.tracker_hosts import check_tracker_url

MLFLOW_DB = "mlflow.db"
DEFAULT_EXPERIMENT = "llama-stack-trl"
MAX_NAME_CHARS = 256
MAX_TAGS, MAX_TAG_CHARS = 64, 64  # W&B's own limit on a tag's length
TAGS = "tags"  # the one option that is a list (of strings); every other option is a string
# What each tracker takes, and the packages it needs on the server (the extra that installs them).
OPTIONS: dict[str, tuple[str, ...]] = {
    "tensorboard": (),
    "mlflow": ("tracking_uri", "experiment_name"),
    "wandb": ("project", "name", "entity", TAGS, "mode"),
}
PACKAGES: dict[str, tuple[str, ...]] = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow",), "wandb": ("wandb",)}
WANDB_MODES = ("offline", "online")
WANDB_DEFAULT_URL = "https://api.wandb.ai"


def check_trackers(
    requested: Sequence[TrackerRequest],
    *,
    job_dir: Path,
    server_mlflow_uri: str | None,
    tracker_hosts: Sequence[str] = (),
) -> TrackersSpec:
    """The trackers asked for, or RequestError naming the first bad one by the caller's field."""
    options: dict[str, tuple[dict[str, Any], str]] = {}
    for tracker in requested:
        name, field = tracker.name.value, tracker.options.field
        if name not in OPTIONS:
            raise RequestError(tracker.name.field, f"unknown tracker {name!r}; use {', '.join(OPTIONS)}")
        if name in options:
            raise RequestError(tracker.name.field, f"{name} is asked for twice (also {options[name][1]}); give it once")
        given = _options(tracker.options.value, name, field)
        if given is None:
            continue
        missing = [package for package in PACKAGES[name] if importlib.util.find_spec(package) is None]
        if missing:
            raise RequestError(
                field, f"{missing[0]} is not installed on the server; install llama-stack-provider-trl[{name}] there"
            )
        options[name] = given, field
    mlflow, wandb = options.get("mlflow"), options.get("wandb")
    return TrackersSpec(
        tensorboard="tensorboard" in options,
        mlflow=None if mlflow is None else _mlflow(*mlflow, job_dir, server_mlflow_uri, tracker_hosts),
        wandb=None if wandb is None else _wandb(*wandb, tracker_hosts),
    )


def _options(value: Any, name: str, field: str) -> dict[str, Any] | None:
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
        if key == TAGS:
            _check_tags(option, f"{field}.{key}")
        elif not isinstance(option, str) or not option or len(option) > MAX_NAME_CHARS:
            raise RequestError(f"{field}.{key}", f"must be a string of 1 to {MAX_NAME_CHARS} characters")
    return value


def _check_tags(tags: Any, field: str) -> None:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise RequestError(field, f"must be a list of at most {MAX_TAGS} strings")
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS:
            raise RequestError(f"{field}[{index}]", f"must be a string of 1 to {MAX_TAG_CHARS} characters")


def _mlflow(
    options: dict[str, str], field: str, job_dir: Path, server_uri: str | None, tracker_hosts: Sequence[str]
) -> MlflowSpec:
    uri = options.get("tracking_uri")
    if uri is not None and not uri.startswith(("http://", "https://")):
        # A request may not point the server at files of its choosing: local stores are the server owner's.
        raise RequestError(
            f"{field}.tracking_uri",
            f"{uri!r} is not an http(s) tracking server; leave it out to record in the server's store "
            f"({server_uri or 'the job directory'})",
        )
    if uri is not None:
        check_tracker_url(uri, f"{field}.tracking_uri", tracker_hosts)
    uri = uri or server_uri or f"sqlite:///{job_dir / MLFLOW_DB}"
    if uri.startswith("sqlite:") and importlib.util.find_spec("alembic") is None:
        raise RequestError(field, "alembic is not installed on the server; install llama-stack-provider-trl[mlflow]")
    return MlflowSpec(tracking_uri=uri, experiment_name=options.get("experiment_name", DEFAULT_EXPERIMENT))


def _wandb(options: dict[str, Any], field: str, tracker_hosts: Sequence[str]) -> WandbSpec:
    mode = options.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise RequestError(f"{field}.mode", f"{mode!r}; use offline (the run stays in the job's directory) or online")
    if mode == "online":  # the W&B server the server's environment names (WANDB_BASE_URL), as wandb picks it
        check_tracker_url(os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_URL, f"{field}.mode", tracker_hosts)
    return WandbSpec(
        project=options.get("project", DEFAULT_EXPERIMENT),
        mode=mode,
        name=options.get("name"),
        entity=options.get("entity"),
        tags=options.get(TAGS, []),
    )
