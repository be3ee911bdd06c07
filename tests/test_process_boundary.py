"""The server side of the provider never imports the training libraries: they load in the training process only."""

import json
import subprocess
import sys

TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets")
# Folders this server does not import: the training and generation processes (torch), the command line (its own
# tests), the demo and tests' helpers, and OGX's front door and serving (tests_ogx checks them, in OGX's venv).
NOT_SERVER_SIDE = ("recipes", "generation", "cli", "demo", "ogx", "serving")
# Every other folder is server side, whatever its name: a folder added later is checked without being listed.
SERVER_SIDE = """
import importlib, json, pkgutil, sys
import llama_stack_provider_trl as package
skip = %r
for module in pkgutil.iter_modules(package.__path__):  # the package root: provider.py, config.py
    if not module.ispkg and module.name not in skip:
        importlib.import_module(f"llama_stack_provider_trl.{module.name}")
rooms = [m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg and m.name not in skip]
for room in rooms:
    room = importlib.import_module(f"llama_stack_provider_trl.{room}")
    for module in pkgutil.walk_packages(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps({"rooms": sorted(rooms), "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def _server_side(names: tuple[str, ...], skip: tuple[str, ...] = NOT_SERVER_SIDE) -> dict[str, list[str]]:
    code = SERVER_SIDE % (skip, names)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_importing_the_provider_and_every_server_side_folder_leaves_the_training_libraries_unloaded() -> None:
    imported = _server_side(TRAINING_LIBRARIES)

    assert {"llama_stack", "engine", "common", "algorithms", "graders"} <= set(imported["rooms"])
    assert imported["loaded"] == []


LLAMA_STACK = ("llama_stack", "llama_stack_api", "llama_stack_client")


def test_the_engine_and_graders_import_neither_llama_stack_nor_the_training_libraries() -> None:
    """What a front door built on another API (OGX's fine-tuning API, in a venv without Llama Stack) imports."""
    # provider.py is Llama Stack's spec of the provider, beside the door
    imported = _server_side(LLAMA_STACK + TRAINING_LIBRARIES, skip=(*NOT_SERVER_SIDE, "llama_stack", "provider"))

    assert {"engine", "graders"} <= set(imported["rooms"])
    assert imported["loaded"] == []


def test_the_llama_stack_face_does_load_llama_stack_api() -> None:
    """The engine-only check would see llama_stack_api where it is imported: it does not pass by looking away."""
    assert "llama_stack_api" in _server_side(LLAMA_STACK)["loaded"]


def test_the_recipe_does_load_them() -> None:
    """The same check sees the libraries where they belong: it would not pass by looking at the wrong names."""
    code = "import sys, llama_stack_provider_trl.recipes.dpo_training_single_device; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(TRAINING_LIBRARIES) <= set(eval(result.stdout))
