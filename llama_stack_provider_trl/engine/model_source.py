"""The model a request names: a Hub id, a local model directory (inside the server's allowed_model_dirs when it
sets them: 403 outside), a model registered with the front door's stack, or an earlier job's checkpoint; and what
its files say about the job (a chat template for conversational rows, a sliding window against packing).

A local model must be a model directory as save_pretrained writes it, or a LoRA adapter whose base obeys the same
rules. Nothing outside the output directory's jobs the caller may read, or the allowed directories, is read, and no
other job's directory (engine/model_places.py: every file resolved, one answer for every place refused).
"""

import json
import os
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.checkpoints import ADAPTER_CONFIG_FILE
from llama_stack_provider_trl.common.job_rules import no_chat_template
from llama_stack_provider_trl.common.job_spec import LoraSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Caller, Given, JobRequest, RequestSources
from llama_stack_provider_trl.engine.model_files import has_chat_template, sliding_window
from llama_stack_provider_trl.engine.model_places import ModelPlaces

MAX_MODEL_CHARS = 4_096
MAX_PATH_COMPONENT_CHARS = 255  # NAME_MAX on Linux and macOS


def check_model(model: Given[str], config: TrlPostTrainingConfig, output_root: Path, caller: Caller) -> str:
    """A local model directory as its real path (the job runs in its own directory), else the name as given (a
    Hugging Face Hub id, where hub_models allows them). Where a local model may be: engine/model_places.py."""
    name = model.value
    if not isinstance(name, str) or not name.strip():
        raise RequestError(model.field, "is empty; give a Hugging Face model id or a local model directory")
    if len(name) > MAX_MODEL_CHARS:
        raise RequestError(
            model.field, f"{len(name)} characters; at most {MAX_MODEL_CHARS}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )
    if any(len(part) > MAX_PATH_COMPONENT_CHARS for part in name.split("/")):
        raise RequestError(model.field, f"a path component is over {MAX_PATH_COMPONENT_CHARS} characters")
    places = ModelPlaces(config, output_root, caller)
    local = Path(name).expanduser()
    # unlike Path.is_dir, os.path.isdir is False (not an error) for a name too long
    if not (name.startswith(("/", "./", "../", "~")) or ".." in local.parts or os.path.isdir(local)):
        if not config.hub_models:
            raise places.hub_refusal(model)
        return name
    real = Path(os.path.realpath(local))
    if not places.may_read(real):
        raise places.refusal(model)
    try:
        if not real.is_dir():
            raise RequestError(model.field, f"local model directory '{name}' does not exist")
        check_model_files(model, real, config, output_root, caller)
        places.check_files(model, real)
    except RequestError as exc:
        if exc.field == model.field and not places.may_tell(real):  # one answer: nothing about what is there
            raise places.refusal(model) from None
        raise
    return str(real)


def check_model_files(
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


async def registered_model(
    model: Given[str], sources: RequestSources, config: TrlPostTrainingConfig, output_root: Path, caller: Caller
) -> str:
    """A model registered with the front door's stack trains from its files, which obey the same rules as a path
    the request names; a local directory or an unregistered name is used as it is."""
    if Path(model.value).is_absolute():
        return model.value
    path = await sources.registered_model_path(model.value)
    return model.value if path is None else check_model(Given(path, model.field), config, output_root, caller)


def checkpoint_model(
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


def check_adapter_base(request: JobRequest, model: str, lora: LoraSpec | None) -> None:
    """An adapter checkpoint is merged into its base when loaded; a 4-bit base cannot take that merge."""
    if lora is not None and lora.quantize_4bit and (Path(model) / ADAPTER_CONFIG_FILE).is_file():
        raise RequestError(
            request.model.field,
            f"'{request.model.value}' is a LoRA adapter, which is merged into its base model before training, and a "
            "4-bit QLoRA base cannot be merged into; start from the job's '-final-merged' checkpoint instead",
        )


def check_chat_template(dataset_id: Given[str], model: str, conversational: bool, strings: str) -> None:
    if conversational and has_chat_template(model) is False:
        raise RequestError(dataset_id.field, no_chat_template(model, strings))


def check_packing_window(
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
