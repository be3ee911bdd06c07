"""The generation process as the server sees it: started on first use, fed requests over its stdin, its replies read
off its stdout by one asyncio task and handed to each request's queue. Nothing here waits on the process outside the
event loop's own I/O, so status calls stay answered while it generates.

A process that exits (killed, out of memory) fails the requests it held with a 500, and the next request starts a
new one (its models load again).
"""

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ogx.log import get_logger

from llama_stack_provider_trl.common.parent_watch import PARENT_PID_ENV
from llama_stack_provider_trl.serving.protocol import Cancel, Generate, Unload

logger = get_logger(name=__name__, category="inference")

WORKER_MODULE = "llama_stack_provider_trl.generation.worker"
READY_TIMEOUT_S = 300
LINE_LIMIT = 1 << 24


class WorkerGone(Exception):
    """The generation process exited while it held the request."""


class GenerationWorker:
    def __init__(
        self,
        device: str,
        max_batch_rows: int,
        environment: dict[str, str],
        on_loaded: Callable[[dict[str, Any]], None],
    ) -> None:
        self.device = device
        self.max_batch_rows = max_batch_rows
        self.environment = environment  # added to the server's: CPU threads
        self.on_loaded = on_loaded  # a model (and its adapters) is in the process's memory: its bytes
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._start_lock = asyncio.Lock()
        self._ready: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None or self._process.returncode is not None else self._process.pid

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._start_lock:
            if self._process is not None and self._process.returncode is None:
                return self._process
            self._ready = asyncio.get_running_loop().create_future()
            env = {**os.environ, **self.environment, PARENT_PID_ENV: str(os.getpid())}
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--device",
                self.device,
                "--max-batch-rows",
                str(self.max_batch_rows),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=LINE_LIMIT,
            )
            logger.info("serving: generation process started", pid=self._process.pid, device=self.device)
            self._reader = asyncio.create_task(self._read(self._process, self._ready))
            await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT_S)
            return self._process

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            reply = json.loads(line)
            event = reply.get("event")
            if event == "ready":
                ready.set_result(None)
            elif event == "loaded":
                self.on_loaded(reply)
            elif (found := self._queues.get(reply.get("id", ""))) is not None:
                found.put_nowait(reply)
        code = await process.wait()
        logger.warning("serving: generation process exited", pid=process.pid, code=code)
        if not ready.done():
            ready.set_exception(WorkerGone(f"the generation process exited with {code} before it was ready"))
        for pending in self._queues.values():
            pending.put_nowait({"event": "gone", "code": code})

    async def _send(self, process: asyncio.subprocess.Process, message: Generate | Cancel | Unload) -> None:
        assert process.stdin is not None
        process.stdin.write(message.model_dump_json().encode() + b"\n")
        await process.stdin.drain()

    async def generate(self, request: Generate) -> AsyncGenerator[dict[str, Any]]:
        """The request's replies, up to ``done`` (or ``error``); a caller that stops listening cancels it."""
        process = await self._started()
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues[request.id] = replies
        finished = False
        try:
            await self._send(process, request)
            held: dict[str, Any] | None = None  # a reply read ahead while joining deltas
            while True:
                reply, held = (held, None) if held is not None else (await replies.get(), None)
                while reply["event"] == "delta" and not replies.empty():
                    # the client reads slower than the model writes: join the text waiting for the same choice
                    ahead = replies.get_nowait()
                    if ahead["event"] != "delta" or ahead["index"] != reply["index"]:
                        held = ahead
                        break
                    reply = {**reply, "text": reply["text"] + ahead["text"]}
                if reply["event"] == "gone":
                    raise WorkerGone(f"the generation process exited with {reply['code']}")
                yield reply
                if reply["event"] in ("done", "error"):
                    finished = True
                    return
        finally:
            del self._queues[request.id]
            if not finished and process.returncode is None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._send(process, Cancel(id=request.id))

    async def unload(self, base: str) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self._send(self._process, Unload(base=base))

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
