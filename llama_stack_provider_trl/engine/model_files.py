"""Read a model's config and tokenizer files in the server, without loading the model or reaching the Hub."""

import json
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def local_file(model: str, name: str) -> Path | None:
    directory = Path(model)
    if directory.is_dir():
        path = directory / name
        return path if path.is_file() else None
    try:
        cached = try_to_load_from_cache(model, name)  # a Hub id: only what is already in the local cache
    except ValueError:  # not a valid Hub id either; loading the model will say so
        return None
    return Path(cached) if isinstance(cached, str) else None


def has_chat_template(model: str) -> bool | None:
    """Whether the model's tokenizer has a chat template; None when its files are not on this machine."""
    template = chat_template(model)
    return None if template is None else bool(template)


def chat_template(model: str) -> str | None:
    """The text of the model's chat template(s) ("" when it has none); None when its files are not on this machine."""
    texts = []
    for name in CHAT_TEMPLATE_FILES:
        path = local_file(model, name)
        if path is not None:
            try:
                texts.append(path.read_text())
            except OSError:
                return None
    config_path = local_file(model, "tokenizer_config.json")
    if config_path is None and not texts:
        return None
    try:
        in_config = json.loads(config_path.read_text()).get("chat_template") if config_path else None
    except (OSError, ValueError):
        return None if not texts else "".join(texts)
    return "".join(texts) + (json.dumps(in_config) if in_config else "")


def sliding_window(model: str) -> int | None:
    """The attention window of a model that limits attention to one; None when it does not, or when its
    config.json is not on this machine."""
    config_path = local_file(model, "config.json")
    if config_path is None:
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config") or config
    if not config.get("use_sliding_window", True):  # Qwen2 lists a window it does not use
        return None
    window = config.get("sliding_window")
    return window if isinstance(window, int) else None


def weight_bytes(model: str) -> int | None:
    """Bytes of the model's weight files (safetensors) in a local directory; None when there are none here."""
    directory = Path(model)
    if not directory.is_dir():
        return None
    sizes = [path.stat().st_size for path in directory.glob("*.safetensors")]
    return sum(sizes) if sizes else None


def weight_dtype_bytes(model: str) -> int:
    """Bytes per stored weight, from config.json's dtype (2 for bf16/fp16, 4 for fp32; 2 when unknown)."""
    config_path = local_file(model, "config.json")
    try:
        config = json.loads(config_path.read_text()) if config_path else {}
    except (OSError, ValueError):
        config = {}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    return 4 if dtype == "float32" else 2
