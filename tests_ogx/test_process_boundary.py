"""The OGX face runs in a venv without Llama Stack 0.6.1, and its server never imports the training libraries."""

import json
import subprocess
import sys

TRAINING_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets")
LLAMA_STACK = ("llama_stack", "llama_stack_api", "llama_stack_client")
# What `ogx run ogx-run.yaml` imports from us: the API module, the providers (fine-tuning, serving), the engine, the
# graders, the shared code. The models served run in the generation process (generation/), which does load torch.
OGX_SIDE = """
import importlib, json, pkgutil, sys
from llama_stack_provider_trl import algorithms, common, engine, graders, ogx, serving
for room in (ogx, serving, engine, common, graders, algorithms):
    for module in pkgutil.iter_modules(room.__path__, room.__name__ + "."):
        importlib.import_module(module.name)
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


# What `llama-stack-trl --ogx` imports: the command and its OGX part.
CLI_SIDE = """
import json, sys
import llama_stack_provider_trl.cli.main, llama_stack_provider_trl.cli.openai_jobs
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    result = subprocess.run([sys.executable, "-c", code % (names,)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_ogx_face_imports_neither_llama_stack_nor_the_training_libraries() -> None:
    loaded = _loaded(OGX_SIDE, (*LLAMA_STACK, *TRAINING_LIBRARIES, "ogx_api"))

    assert loaded == ["ogx_api"]  # it does see what it imports


def test_the_generation_process_does_load_torch_and_peft() -> None:
    """The same check sees the libraries where the served models run: it does not pass by looking away."""
    loaded = _loaded(GENERATION_SIDE, TRAINING_LIBRARIES)

    assert {"torch", "transformers", "peft"} <= set(loaded)


GENERATION_SIDE = """
import json, sys
import llama_stack_provider_trl.generation.worker
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_the_cli_on_ogx_imports_openai_and_neither_llama_stack_client_nor_the_server() -> None:
    loaded = _loaded(CLI_SIDE, (*LLAMA_STACK, *TRAINING_LIBRARIES, "ogx", "ogx_api", "openai"))

    assert loaded == ["openai"]  # llama-stack-client is installed here (the cli extra), and not needed
