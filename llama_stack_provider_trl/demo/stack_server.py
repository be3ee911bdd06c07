"""Start and stop a real ``llama stack run`` (or ``ogx run``) server on a free loopback port (demo and tests)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StackServer:
    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "llama_stack.cli.llama", "stack", "run"),
        cwd: Path | None = None,
    ) -> None:
        """``command``: the server's command line before the config path (an OGX server: ``ogx_server``); ``cwd``:
        the directory it starts in (None: this process's)."""
        self.config_path = config_path
        self.cwd = cwd
        self.command = list(command)
        self.log_path = log_path
        self.port = free_port()
        self.env = {
            **os.environ,
            # llama-stack-client 0.7.0 against server 0.6.1: without this the server answers 426
            "LLAMA_STACK_DISABLE_VERSION_CHECK": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, str(self.config_path), "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # `ogx run` exits 0 when its startup fails: any exit before the health check answers is a failure
                raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.command} was not healthy after {timeout_s}s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


OGX_APIS_DIR = Path(__file__).resolve().parent.parent / "ogx" / "apis"  # the fine-tuning API's spec


def ogx_server(config_path: Path, home: Path, venv: Path, env: dict[str, str] | None = None) -> StackServer:
    """``ogx run`` of ``config_path`` (ogx-run.yaml) from the OGX install in ``venv`` (OGX cannot share a venv
    with Llama Stack 0.6.1), its state all under ``home``: the same ``home`` again is a restarted server."""
    home.mkdir(parents=True, exist_ok=True)
    return StackServer(
        config_path,
        log_path=home / "server.log",
        env={
            "HOME": str(home),
            "TRL_OGX_DIR": str(home / "ogx"),
            "TRL_OGX_APIS_DIR": str(OGX_APIS_DIR),
            "TRL_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
            **(env or {}),
        },
        command=[str(venv / "bin" / "ogx"), "run"],
    )
