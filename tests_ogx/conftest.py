"""A real `ogx run ogx-run.yaml` (OGX 1.5 with this package's fine-tuning API) driven by the official openai client.

This suite runs in .venv-ogx (`make test`): OGX needs mcp>=2 and cannot share the Llama Stack 0.6.1 venv.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import openai

from llama_stack_provider_trl.demo import stack_server
from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.tiny_model import build_tiny_model
from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
OGX_RUN_YAML = REPO_ROOT / "ogx-run.yaml"


@pytest.fixture(scope="session")
def preference_rows() -> list[dict[str, str]]:
    return arithmetic_preferences(12)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, preference_rows: list[dict[str, str]]) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and a chat template, saved to a local directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), corpus(preference_rows))


def ogx_server(
    home: Path,
    auth: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    serving: dict[str, Any] | None = None,
    **trl_config: Any,
) -> StackServer:
    """`ogx run ogx-run.yaml` of this venv, its state under ``home`` (again: a restarted server); ``auth``: its
    ``server.auth`` section, ``env``: variables added to its environment, ``serving``: serving provider config
    fields, ``trl_config``: fine-tuning provider config fields, each set over the file's."""
    config_path = OGX_RUN_YAML
    if auth is not None or trl_config or serving:
        config = yaml.safe_load(OGX_RUN_YAML.read_text())
        config["providers"]["fine_tuning"][0]["config"].update(trl_config)
        config["providers"]["inference"][0]["config"].update(serving or {})
        if auth is not None:
            config["server"]["auth"] = auth
        home.mkdir(parents=True, exist_ok=True)
        config_path = home / "ogx-run.yaml"
        config_path.write_text(yaml.safe_dump(config))
    return stack_server.ogx_server(config_path, home, Path(sys.prefix), env)


def client_for(server: StackServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-checked", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    with ogx_server(tmp_path_factory.mktemp("ogx-server")) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: StackServer) -> openai.OpenAI:
    return client_for(server)
