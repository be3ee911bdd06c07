"""The server side of the provider never imports the training libraries: they load in the training process only."""

import json
import subprocess
import sys

TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets")
# The Llama Stack face and everything under engine/ and common/: all of what `llama stack run` imports from us.
SERVER_SIDE = """
import importlib, json, pkgutil, sys
import llama_stack_provider_trl as package
from llama_stack_provider_trl import engine, common
for name in ("provider", "config", "post_training", "stack_api"):
    importlib.import_module(f"llama_stack_provider_trl.{name}")
for room in (engine, common):
    for module in pkgutil.iter_modules(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_importing_the_provider_and_engine_leaves_the_training_libraries_unloaded() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVER_SIDE % (TRAINING_LIBRARIES,)], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_the_recipe_does_load_them() -> None:
    """The same check sees the libraries where they belong: it would not pass by looking at the wrong names."""
    code = "import sys, llama_stack_provider_trl.recipes.dpo_training_single_device; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(TRAINING_LIBRARIES) <= set(eval(result.stdout))
