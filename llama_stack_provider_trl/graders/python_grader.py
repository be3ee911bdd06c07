"""python: the caller's ``grade(sample, item)`` in warm worker processes (sandbox_worker.py), a few per grader
source, each with no server environment, its own temporary working directory, its own namespaces where the OS allows,
and limits on address space, CPU time and wall time. A batch is one round trip to each worker it is split over;
a worker that dies or overruns its time is killed and replaced, its sample flagged, the rest of its share sent to
the new worker."""

import ast
import atexit
import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders.base import Fields, Grader
from llama_stack_provider_trl.graders.result import GraderResult
from llama_stack_provider_trl.graders.settings import GraderSettings
from llama_stack_provider_trl.graders.templates import Sample

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).parent / "sandbox_worker.py"
MAX_SOURCE_CHARS = 256_000
# Variables the worker starts with: none of the server's; one thread per numeric library.
WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
START_TIMEOUT_S = 60.0
FULLY_ISOLATED = "network, processes, /proc, files"
MAX_POOLS = 8


@dataclass(frozen=True)
class Outcome:
    """One sample's answer from the sandbox: a reward, or the flag and its details."""

    reward: float = 0.0
    flag: str | None = None
    detail: str | None = None
    seconds: float = 0.0


class WorkerDied(Exception):
    def __init__(self, flag: str, detail: str) -> None:
        super().__init__(detail)
        self.flag = flag


class Worker:
    """One sandboxed process with the source loaded."""

    def __init__(self, source: str, settings: GraderSettings) -> None:
        self.settings = settings
        self.home = tempfile.mkdtemp(prefix="python-grader-")
        limits = {
            "memory_mb": settings.python_memory_mb,
            "cpu_s": settings.python_cpu_s,
            "cpu_lifetime_s": int(max(60, settings.python_cpu_s * 50)),
            "parent": os.getpid(),
            "hidden": list(settings.python_hidden_dirs),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-X", "utf8", str(WORKER_SCRIPT), json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.home,
            env={**WORKER_ENVIRONMENT, "HOME": self.home, "TMPDIR": self.home},
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self._send({"source": source})
        ready = json.loads(self._line(START_TIMEOUT_S, "starting"))
        self.isolated: str = ready["isolated"]

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise WorkerDied("python_grader_runtime_error", self._death(f"stopped reading ({exc})")) from exc

    def _line(self, timeout: float, doing: str) -> bytes:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                if time.monotonic() >= deadline:
                    self.kill()
                    raise WorkerDied(
                        "unresponsive_reward_error", f"grade ran past the {timeout:g} s time limit while {doing}"
                    )
                continue
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise WorkerDied("python_grader_runtime_error", self._death(f"ended while {doing}"))
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def _death(self, what: str) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        why = f"exit status {code}"
        if code is not None and (code < 0 or 128 < code < 128 + signal.NSIG):  # a signal, or the namespace's
            name = signal.Signals(-code if code < 0 else code - 128).name  # first process mirroring one
            why = {"SIGXCPU": f"SIGXCPU: over the {self.settings.python_cpu_s:g} s CPU time limit"}.get(name, name)
        self.kill()
        return f"the grader's process {what}: {why}"

    def grade(self, pairs: list[tuple[dict[str, Any], Any]], done: Callable[[Outcome], None]) -> None:
        """Send the pairs at once, then read one answer per pair, each within the time limit. WorkerDied on the
        first that overruns or kills the process (the answers before it have been handed to ``done``)."""
        self._send({"batch": pairs})
        for _ in pairs:
            answer = json.loads(self._line(self.settings.python_timeout_s, "grading a sample"))
            if "error" in answer:
                done(Outcome(0.0, "python_grader_runtime_error", answer["error"], answer["time"]))
            else:
                done(Outcome(answer["reward"], seconds=answer["time"]))

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.selector.close()
        shutil.rmtree(self.home, ignore_errors=True)


class WorkerPool:
    """Warm workers for one source: at most ``settings.python_workers``, started when first needed."""

    def __init__(self, source: str, settings: GraderSettings) -> None:
        self.source = source
        self.settings = settings
        self.idle: list[Worker] = []
        self.lock = threading.Lock()
        self.closed = False
        self.isolated: str | None = None

    def _take(self) -> Worker:
        with self.lock:
            while self.idle:
                worker = self.idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        worker = Worker(self.source, self.settings)
        if self.isolated is None and worker.isolated != FULLY_ISOLATED:
            logger.warning("python graders are isolated from: %s (not all of %s)", worker.isolated, FULLY_ISOLATED)
        self.isolated = worker.isolated
        return worker

    def _give_back(self, worker: Worker) -> None:
        with self.lock:
            if self.closed or not worker.alive():
                worker.kill()
            else:
                self.idle.append(worker)

    def grade(self, pairs: list[tuple[dict[str, Any], Any]]) -> list[Outcome]:
        """Every pair graded: split over the workers, each share one round trip (a replaced worker takes the
        rest of its share)."""
        shares = max(1, min(self.settings.python_workers, len(pairs)))
        size = -(-len(pairs) // shares)
        chunks = [list(range(i, min(i + size, len(pairs)))) for i in range(0, len(pairs), size)]
        outcomes: list[Outcome | None] = [None] * len(pairs)
        if len(chunks) == 1:
            self._grade_share(pairs, chunks[0], outcomes)
        else:
            with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="python-grader") as threads:
                list(threads.map(lambda chunk: self._grade_share(pairs, chunk, outcomes), chunks))
        return [outcome or Outcome(0.0, "python_grader_server_error", "NoAnswer") for outcome in outcomes]

    def _grade_share(self, pairs: list[tuple[dict[str, Any], Any]], share: list[int], outcomes: list[Any]) -> None:
        left = list(share)
        while left:
            try:
                worker = self._take()
            except (OSError, ValueError, KeyError, WorkerDied) as exc:
                for index in left:
                    outcomes[index] = Outcome(0.0, "python_grader_server_error", type(exc).__name__)
                return

            def done(outcome: Outcome) -> None:
                outcomes[left.pop(0)] = outcome

            try:
                worker.grade([pairs[index] for index in left], done)
            except WorkerDied as exc:
                outcomes[left.pop(0)] = Outcome(0.0, exc.flag, str(exc), self.settings.python_timeout_s)
                worker.kill()
                continue
            self._give_back(worker)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()


_pools: OrderedDict[tuple[str, GraderSettings], WorkerPool] = OrderedDict()
_pools_lock = threading.Lock()


def pool_for(source: str, settings: GraderSettings) -> WorkerPool:
    """The warm pool of this source under these limits; the least recently used pool closes past MAX_POOLS."""
    with _pools_lock:
        key = (source, settings)
        pool = _pools.pop(key, None) or WorkerPool(source, settings)
        _pools[key] = pool
        while len(_pools) > MAX_POOLS:
            _pools.popitem(last=False)[1].close()
        return pool


def sandbox_isolation() -> str:
    """What the sandbox isolates on this machine (FULLY_ISOLATED where the OS allows it all): one worker asked."""
    pool = pool_for("def grade(sample, item):\n    return 0\n", GraderSettings(python_workers=1))
    pool.grade([({}, None)])
    return pool.isolated or "nothing"


def close_pools() -> None:
    """Every worker process stopped (at exit, and by a test that counts processes)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


class PythonGrader(Grader):
    type: ClassVar[str] = "python"

    def __init__(self, spec: dict[str, Any], field: str, settings: GraderSettings) -> None:
        fields = Fields(spec, field, ("type", "name", "source", "image_tag"))
        super().__init__(spec, fields.name())
        source = fields.string("source")
        assert source is not None
        if spec.get("image_tag") is not None:
            raise RequestError(
                fields.path("image_tag"),
                "names one of OpenAI's sandbox images; this server runs python graders in its own Python "
                f"{sys.version_info.major}.{sys.version_info.minor} with its installed packages: leave image_tag out",
            )
        _check_source(source, fields.path("source"))
        self.source = source
        self.settings = settings

    def _grade_batch(self, samples: list[Sample], items: list[Any]) -> list[GraderResult]:
        start = time.monotonic()
        outcomes = pool_for(self.source, self.settings).grade(
            [(sample.as_dict(), item) for sample, item in zip(samples, items, strict=True)]
        )
        results = []
        for outcome in outcomes:
            result = self.result(outcome.reward)
            if outcome.flag:
                result.errors.flag(outcome.flag, outcome.detail)
                result.reward = 0.0
            result.execution_time = outcome.seconds if outcome.seconds else time.monotonic() - start
            results.append(result)
        return results


def _check_source(source: str, field: str) -> None:
    if len(source) > MAX_SOURCE_CHARS:
        raise RequestError(field, f"is longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise RequestError(field, f"is not valid Python: {exc.msg} (line {exc.lineno})") from exc
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "grade":
            if len(node.args.args) + len(node.args.posonlyargs) < 2 and node.args.vararg is None:
                raise RequestError(field, "grade must take two arguments: grade(sample, item)")
            return
    raise RequestError(field, "must define a top-level function grade(sample, item) returning a number")


atexit.register(close_pools)
