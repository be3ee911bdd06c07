import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.tiny_model import build_tiny_model
from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_YAML = REPO_ROOT / "run.yaml"


@pytest.fixture(scope="session")
def preference_rows() -> list[dict[str, str]]:
    return arithmetic_preferences(24)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, preference_rows: list[dict[str, str]]) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and a chat template, saved to a local directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), corpus(preference_rows))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    """A real `llama stack run run.yaml` on a free port, with its own HOME and output directory."""
    home = tmp_path_factory.mktemp("home")
    server = StackServer(
        RUN_YAML,
        log_path=home / "server.log",
        env={
            "HOME": str(home),
            "TRL_OUTPUT_DIR": str(home / "jobs"),
            "TRL_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
        },
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def client(stack: StackServer) -> LlamaStackClient:
    return LlamaStackClient(base_url=stack.base_url, max_retries=0, timeout=60)
