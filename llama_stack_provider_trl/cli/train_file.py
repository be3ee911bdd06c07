"""`llama-stack-trl train CONFIG.yaml`: a training job described in a YAML file, with its data in local JSONL files.

Both servers' files share ``method``, ``model`` (./ and ../ relative to the file), ``dataset`` and
``validation_dataset`` (local JSONL, relative to the file); the rest is the request as each server's API takes it
(stack.py: Llama Stack 0.6.1's ``algorithm_config``, ``training_config``, ...; openai_jobs.py: OpenAI's
``hyperparameters``, ``suffix``, ``seed``, ...). This module reads and checks what they share; the server checks
everything else, so its 400 names any bad field.
"""

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml


class TrainFileError(ValueError):
    """The YAML or a data file it names cannot be used; the message names the file and the field."""


SHARED_KEYS = ("method", "model", "dataset", "validation_dataset")


def load(config_path: Path, keys: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    """The file's mapping, checked: only ``keys`` (the shared ones first), ``method`` one of ``methods`` (the first
    is the default), ``model`` and ``dataset`` given."""
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainFileError(f"{config_path}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TrainFileError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise TrainFileError(f"{config_path}: expected a mapping of {', '.join(keys)}")
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise TrainFileError(f"{config_path}: unknown key {unknown[0]!r}; the keys are: {', '.join(keys)}")
    config.setdefault("method", methods[0])
    if config["method"] not in methods:
        raise TrainFileError(f"{config_path}: method: {config['method']!r} is not one of {', '.join(methods)}")
    for key in ("model", "dataset"):
        if not config.get(key):
            raise TrainFileError(f"{config_path}: {key} is required")
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


def beside(config_path: Path, name: str) -> Path:
    return (config_path.parent / Path(name).expanduser()).resolve()


def model_path(config_path: Path, model: str) -> str:
    """A ./ or ../ model path is relative to the YAML file; anything else (a Hub id, a registered model, an
    absolute path) goes to the server as written."""
    return str(beside(config_path, model)) if model.startswith(("./", "../")) else model
