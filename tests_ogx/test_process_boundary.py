"""The OGX face runs in a venv without Llama Stack 0.6.1, and its server never imports the training libraries."""

import json
import subprocess
import sys

TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets")
LLAMA_STACK = ("llama_stack", "llama_stack_api", "llama_stack_client")
# What `ogx run ogx-run.yaml` imports from us: the API module, the provider, the engine and the shared code.
OGX_SIDE = """
import importlib, json, pkgutil, sys
from llama_stack_provider_trl import common, engine, ogx
for room in (ogx, engine, common):
    for module in pkgutil.iter_modules(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_the_ogx_face_imports_neither_llama_stack_nor_the_training_libraries() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", OGX_SIDE % (LLAMA_STACK + TRAINING_LIBRARIES + ("ogx_api",),)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(loaded.stdout) == ["ogx_api"]  # it does see what it imports
