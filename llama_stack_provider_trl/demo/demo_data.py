"""The demo's preference pairs, shipped with the package (written by scripts/make_demo_preferences.py).

Conversational rows: a user question as the prompt; chosen answers with just the answer ("Paris."), rejected
restates the question around it ("The capital of France is Paris.").
"""

import json
from importlib.resources import files
from typing import Any, Literal


def preferences(split: Literal["train", "heldout"]) -> list[dict[str, Any]]:
    text = files("llama_stack_provider_trl.demo").joinpath("data", f"preferences_{split}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
