"""The server side of the provider never imports the training libraries: they load in the training process only."""

import json
import subprocess
import sys

TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets")
# The Llama Stack face and everything under engine/ and common/: all of what `llama stack run` imports from us.
SERVER_SIDE = """
import importlib, json, pkgutil, sys
import llama_stack_provider_trl as package
from llama_stack_provider_trl import engine, common, graders
for name in ("provider", "config", "post_training", "stack_api"):
    importlib.import_module(f"llama_stack_provider_trl.{name}")
for room in (engine, common, graders):
    for module in pkgutil.iter_modules(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_importing_the_provider_and_engine_leaves_the_training_libraries_unloaded() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVER_SIDE % (TRAINING_LIBRARIES,)], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


# The engine, the graders and what both processes share, alone: what a front door built on another API (OGX's
# fine-tuning API, in a venv without Llama Stack) imports from us.
ENGINE_ONLY = """
import importlib, json, pkgutil, sys
from llama_stack_provider_trl import engine, common, graders
for room in (engine, common, graders):
    for module in pkgutil.iter_modules(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""
LLAMA_STACK = ("llama_stack", "llama_stack_api", "llama_stack_client")


def test_the_engine_and_graders_import_neither_llama_stack_nor_the_training_libraries() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", ENGINE_ONLY % (LLAMA_STACK + TRAINING_LIBRARIES,)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(loaded.stdout) == []


def test_the_llama_stack_face_does_load_llama_stack_api() -> None:
    """The engine-only check would see llama_stack_api where it is imported: it does not pass by looking away."""
    loaded = subprocess.run(
        [sys.executable, "-c", SERVER_SIDE % (LLAMA_STACK,)], capture_output=True, text=True, check=True
    )
    assert "llama_stack_api" in json.loads(loaded.stdout)


def test_the_recipe_does_load_them() -> None:
    """The same check sees the libraries where they belong: it would not pass by looking at the wrong names."""
    code = "import sys, llama_stack_provider_trl.recipes.dpo_training_single_device; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(TRAINING_LIBRARIES) <= set(eval(result.stdout))
