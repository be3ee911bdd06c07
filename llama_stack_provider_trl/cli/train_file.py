"""`llama-stack-trl train CONFIG.yaml`: a training job described in a YAML file, with its data in local JSONL files.

The YAML holds the request as the API takes it (``algorithm_config``, ``training_config``,
``hyperparam_search_config``, ``logger_config``), plus where the rows are:

    method: dpo                       # dpo (preference_optimize) or sft (supervised_fine_tune)
    model: ./models/smollm2           # the model to train; ./ and ../ are relative to this file
    dataset: prefs.jsonl              # local JSONL, relative to this file: registered as the training set
    validation_dataset: heldout.jsonl # optional, the same way
    job_uuid: my-first-dpo            # optional: <method>-<file name>-<time> otherwise
    algorithm_config: {beta: 0.1, loss_type: sigmoid}
    training_config: {n_epochs: 1, data_config: {batch_size: 4, shuffle: true}}

The registered datasets' ids (``<job_uuid>-train``, ``<job_uuid>-validation``) fill in ``data_config``. The
server checks everything else, so its 400 names any bad field.
"""

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from llama_stack_client import LlamaStackClient

METHODS = ("dpo", "sft")
KEYS = (
    "method",
    "model",
    "dataset",
    "validation_dataset",
    "job_uuid",
    "algorithm_config",
    "training_config",
    "hyperparam_search_config",
    "logger_config",
    "checkpoint_dir",
)


class TrainFileError(ValueError):
    """The YAML or a data file it names cannot be used; the message names the file and the field."""


def submit(client: LlamaStackClient, config_path: Path) -> str:
    """Register the file's datasets and submit its job; return the job's id."""
    config = load(config_path)
    job_uuid = config.get("job_uuid") or default_job_uuid(config["method"], config_path)
    training_config = dict(config.get("training_config") or {})
    data_config = dict(training_config.get("data_config") or {})
    train_rows = read_jsonl(_beside(config_path, config["dataset"]))
    data_config["dataset_id"] = _register(client, f"{job_uuid}-train", train_rows)
    if config.get("validation_dataset"):
        rows = read_jsonl(_beside(config_path, config["validation_dataset"]))
        data_config["validation_dataset_id"] = _register(client, f"{job_uuid}-validation", rows)
    if config["method"] == "dpo" and "data_format" not in data_config:
        data_config["data_format"] = "dialog" if isinstance(train_rows[0].get("chosen"), list) else "instruct"
    training_config["data_config"] = data_config
    common = {
        "job_uuid": job_uuid,
        "training_config": training_config,
        "hyperparam_search_config": config.get("hyperparam_search_config") or {},
        "logger_config": config.get("logger_config") or {},
    }
    model = _model(config_path, str(config["model"]))
    if config["method"] == "dpo":
        client.alpha.post_training.preference_optimize(
            **common, finetuned_model=model, algorithm_config=config["algorithm_config"]
        )
    else:
        extra = {key: config[key] for key in ("algorithm_config", "checkpoint_dir") if config.get(key) is not None}
        client.alpha.post_training.supervised_fine_tune(**common, model=model, **extra)
    return job_uuid


def load(config_path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainFileError(f"{config_path}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TrainFileError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise TrainFileError(f"{config_path}: expected a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise TrainFileError(f"{config_path}: unknown key {unknown[0]!r}; the keys are: {', '.join(KEYS)}")
    config.setdefault("method", "dpo")
    if config["method"] not in METHODS:
        raise TrainFileError(f"{config_path}: method: {config['method']!r} is not one of {', '.join(METHODS)}")
    for key in ("model", "dataset"):
        if not config.get(key):
            raise TrainFileError(f"{config_path}: {key} is required")
    if config["method"] == "dpo" and not isinstance(config.get("algorithm_config"), dict):
        raise TrainFileError(f"{config_path}: algorithm_config is required for dpo, e.g. {{beta: 0.1}}")
    return config


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TrainFileError(f"{path}:{number}: not a JSON line: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise TrainFileError(f"{path}:{number}: a row must be a JSON object")
                rows.append(row)
    except OSError as exc:
        raise TrainFileError(f"{path}: cannot read it: {exc.strerror}") from exc
    if not rows:
        raise TrainFileError(f"{path}: no rows")
    return rows


def default_job_uuid(method: str, config_path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", config_path.stem)
    return f"{method}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _register(client: LlamaStackClient, dataset_id: str, rows: list[dict[str, Any]]) -> str:
    client.beta.datasets.register(
        purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
    )
    return dataset_id


def _beside(config_path: Path, name: str) -> Path:
    return (config_path.parent / Path(name).expanduser()).resolve()


def _model(config_path: Path, model: str) -> str:
    """A ./ or ../ model path is relative to the YAML file; anything else (a Hub id, a registered model, an
    absolute path) goes to the server as written."""
    return str(_beside(config_path, model)) if model.startswith(("./", "../")) else model
