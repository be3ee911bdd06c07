"""Servers, job specs and waits for the job-system tests."""

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.algorithms.dpo import DPOJobSpec
from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.engine.job_request import Given

from conftest import RUN_YAML
from fake_recipe import LAUNCHES_FILE
from helpers import write_job

# A stand-in training process for JobManager's own tests (tests/fake_recipe.py; tests/ must be on PYTHONPATH).
# Tests against a server run the real recipe.
FAKE_RECIPE = "fake_recipe"
TESTS_DIR = Path(__file__).resolve().parent


EIGHT_PAIRS = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8


class EightRows:
    """Admission's sources without a server: no registered models, and every dataset holds 8 preference pairs."""

    async def registered_model_path(self, model: str) -> None:
        return None

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        return EIGHT_PAIRS


def make_spec(root: Path, job_uuid: str, model: str = "fake", **overrides: Any) -> DPOJobSpec:
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8
    return write_job(root / job_uuid, model, rows, **{"max_steps_per_epoch": 3, **overrides})


def launches(job_dir: str | Path) -> list[list[str]]:
    """One entry per time the fake recipe ran for this job: [pid, time, *flags]."""
    path = Path(job_dir) / LAUNCHES_FILE
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def recipe_starts(job_dir: str | Path) -> int:
    """How many times a training process (real or fake) started for this job: its 'started' events."""
    path = Path(job_dir) / EVENTS_FILE
    return sum(json.loads(line)["event"] == "started" for line in path.read_text().splitlines()) if path.exists() else 0


def poll(condition: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout_s}s")
        time.sleep(0.1)
    return result


def server_for(
    home: Path, auth: dict[str, Any] | None = None, env: dict[str, str] | None = None, **provider_config: Any
) -> StackServer:
    """A `llama stack run` of run.yaml with its provider config overridden, its state all under ``home``; ``auth``:
    its ``server.auth`` section; ``env``: more of the server's environment.

    Call it again with the same ``home`` for a restarted server: same job store, same output directory.
    """
    config = yaml.safe_load(RUN_YAML.read_text())
    [provider] = config["providers"]["post_training"]
    provider["config"].update(provider_config)
    if auth is not None:
        config["server"]["auth"] = auth
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    server_env = {
        "HOME": str(home),
        "SQLITE_STORE_DIR": str(home / "store"),
        "TRL_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    if "output_dir" not in provider_config:
        server_env["TRL_OUTPUT_DIR"] = str(home / "jobs")
    return StackServer(config_path, log_path=home / "server.log", env=server_env)


def client_for(server: StackServer) -> LlamaStackClient:
    return LlamaStackClient(base_url=server.base_url, max_retries=0, timeout=60)


def kill_server(server: StackServer) -> None:
    """SIGKILL the whole server process group, as a crash would: no shutdown() runs."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def _members(column: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose /proc stat field ``column`` (after the name) is ``value``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[column]) == value:
            members.append(int(stat.parent.name))
    return members


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """Live processes in session ``sid``."""
    return _members(3, sid)
