"""The package as a user installs it, from its wheel: `llama-stack-trl-ogx-config` writes a run config that `ogx run`
serves from any directory (OGX reads a relative external_apis_dir from the directory it starts in)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import yaml

from llama_stack_provider_trl.demo.stack_server import StackServer

REPO_ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = (".git", ".venv*", "build", "dist", "*.egg-info", ".demo", ".bench", ".whl", "__pycache__", ".*_cache")


def test_a_wheel_install_serves_fine_tuning_from_any_directory_with_the_config_it_writes(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: no build/ left over from another build
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SHIPPED))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source], check=True)
    [wheel] = (tmp_path / "wheel").glob("llama_stack_provider_trl-*.whl")
    site = tmp_path / "site"  # a target of its own: the shared venvs stay as they are
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's package, not the checkout's

    written = subprocess.run(
        [site / "bin" / "llama-stack-trl-ogx-config", "ogx-run.yaml"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    config = elsewhere / "ogx-run.yaml"
    assert f"start the server with: ogx run {Path('ogx-run.yaml')}" in written.stdout
    apis_dir = Path(yaml.safe_load(config.read_text())["external_apis_dir"])
    assert apis_dir == site.resolve() / "llama_stack_provider_trl" / "ogx" / "apis"
    home = tmp_path / "home"
    home.mkdir()
    server = StackServer(
        Path("ogx-run.yaml"),
        log_path=home / "server.log",
        env={"PYTHONPATH": str(site), "HOME": str(home), "TRL_OGX_DIR": str(home / "ogx"), "TRL_DEVICE": "cpu"},
        command=[str(Path(sys.prefix) / "bin" / "ogx"), "run"],
        cwd=elsewhere,
    )
    with server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-checked", max_retries=0, timeout=60)
        assert client.fine_tuning.jobs.list().data == []
    assert "Loaded external API spec   api_name=fine_tuning" in (home / "server.log").read_text()
