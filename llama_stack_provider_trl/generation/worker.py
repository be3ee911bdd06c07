"""The generation process: loads the models the server names, generates with ``model.generate``, streams text back.

Started by the server (serving/worker_client.py) as ``python -m llama_stack_provider_trl.generation.worker``; reads
requests from stdin and writes replies to stdout, one JSON object a line (serving/protocol.py). A thread reads stdin
so that a cancel reaches a batch while it generates; the main thread generates. Requests waiting together for the
same model and sampling settings generate as one batch (left-padded, each row stopping on its own: its end of
sequence, its ``max_tokens``, its ``stop`` strings, or its client gone); requests arriving within ``GATHER_S`` of
an idle process's first one count as together. Greedy requests batch with any others of their model; a seeded
sampling request runs alone, so its seed decides its tokens. A request that arrives while a batch runs waits for
the next batch.

Each model loads on first use, in float32 on CPU and bfloat16 (float16 where bfloat16 is missing) on a GPU, and stays
until the server unloads it. LoRA adapters load over their base model (peft), so adapters of one base share its
weights; a batch runs one adapter, or the base with the adapters off.
"""

import argparse
import contextlib
import gc
import json
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, StoppingCriteria

from llama_stack_provider_trl.common.parent_watch import die_with_parent
from llama_stack_provider_trl.serving.protocol import Cancel, FinishReason, Generate, ModelFiles, Unload

BatchKey = tuple[str, str | None, Any]
# After a request arrives with nothing running, wait this long for others sent at the same moment (clients that
# start together) so that they generate in one batch rather than one after the other.
GATHER_S = 0.02


class Replies:
    """The replies stream (the process's original stdout); everything else printed goes to stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, **reply: Any) -> None:
        line = json.dumps(reply) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


@dataclass
class LoadedModel:
    model: Any  # a PreTrainedModel, or a PeftModel once an adapter is loaded over it
    tokenizer: PreTrainedTokenizerBase
    eos_ids: set[int]
    max_positions: int | None
    adapters: dict[str, str] = field(default_factory=dict)  # adapter directory -> peft adapter name

    def bytes(self) -> int:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


class BadRequest(Exception):
    """A request the model cannot run; the message is for the caller."""


@dataclass
class Row:
    """One choice of one request, as it generates."""

    request: Generate
    index: int
    replies: Replies
    tokenizer: PreTrainedTokenizerBase
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the text already sent
    done: bool = False

    def add(self, token: int, eos_ids: set[int], cancelled: bool) -> None:
        if self.done:
            return
        if cancelled:
            self.done = True
            return
        if token in eos_ids:
            self._finish("stop")
            return
        self.ids.append(token)
        text = self.text()
        stops = [text.find(stop) for stop in self.request.stop if stop and stop in text]
        if stops:
            self._send(text[: min(stops)], final=True)
            self._finish("stop")
        elif len(self.ids) >= self.request.max_tokens:
            self._send(text, final=True)
            self._finish("length")
        else:
            self._send(text, final=False)

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=self.request.skip_special_tokens)

    def _send(self, text: str, final: bool) -> None:
        end = len(text)
        if not final:  # hold back a character still incomplete, and what may yet become a stop string
            end = len(text.rstrip("\ufffd"))
            end -= max((len(stop) - 1 for stop in self.request.stop), default=0)
        if end > self.sent:
            self.replies.send(id=self.request.id, event="delta", index=self.index, text=text[self.sent : end])
            self.sent = end

    def _finish(self, reason: FinishReason) -> None:
        self.done = True
        tokens = len(self.ids)
        self.replies.send(id=self.request.id, event="finished", index=self.index, reason=reason, tokens=tokens)

    def end(self) -> None:
        """generate returned: a row still open ran out of room (its model's longest sequence)."""
        if not self.done:
            self._send(self.text(), final=True)
            self._finish("length")


class RowsStop(StoppingCriteria):
    """Hands each new token to its row, and tells generate which rows are done (generate calls it every step with
    the ids so far, the newest last)."""

    def __init__(self, rows: list[Row], eos_ids: set[int], cancelled: set[str]) -> None:
        self.rows = rows
        self.eos_ids = eos_ids
        self.cancelled = cancelled

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: Any
    ) -> torch.BoolTensor:
        for row, token in zip(self.rows, input_ids[:, -1].tolist(), strict=True):
            row.add(token, self.eos_ids, row.request.id in self.cancelled)
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


class Worker:
    def __init__(self, device: str, max_batch_rows: int, replies: Replies) -> None:
        self.device = device
        self.max_batch_rows = max_batch_rows
        self.replies = replies
        self.inbox: queue.Queue[Generate | Unload | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.models: dict[str, LoadedModel] = {}
        self.dtype = _dtype(device)

    # -- reading --------------------------------------------------------------------------------------------------
    def read(self, lines: IO[str]) -> None:
        for line in lines:
            message = json.loads(line)
            if message["op"] == "cancel":
                self.cancelled.add(Cancel.model_validate(message).id)
            elif message["op"] == "unload":
                self.inbox.put(Unload.model_validate(message))
            else:
                self.inbox.put(Generate.model_validate(message))
        self.inbox.put(None)  # the server closed our stdin: it is gone or stopping us

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self) -> None:
        waiting: deque[Generate] = deque()
        while True:
            gather = 0.0
            if not waiting:
                message = self.inbox.get()
                if message is None:
                    return
                self._take(message, waiting)
                gather = GATHER_S
            while True:  # everything that arrived meanwhile (or within the gathering window) joins the queue
                try:
                    message = self.inbox.get(timeout=gather) if gather else self.inbox.get_nowait()
                except queue.Empty:
                    break
                if message is None:
                    return
                self._take(message, waiting)
            if waiting:
                self._run_batch(self._next_batch(waiting))

    def _take(self, message: Generate | Unload, waiting: deque[Generate]) -> None:
        if isinstance(message, Unload):
            self._unload(message.base)
        elif message.id in self.cancelled:
            self.cancelled.discard(message.id)
        else:
            waiting.append(message)

    def _next_batch(self, waiting: deque[Generate]) -> list[Generate]:
        """The oldest request and the waiting ones it can share a batch with, up to ``max_batch_rows`` rows."""
        first = waiting.popleft()
        batch, rows, key = [first], first.n, _batch_key(first)
        for request in list(waiting):
            if _batch_key(request) == key and rows + request.n <= self.max_batch_rows:
                waiting.remove(request)
                batch.append(request)
                rows += request.n
        return batch

    def _run_batch(self, batch: list[Generate]) -> None:
        try:
            loaded = self._load(batch[0].model)
            prompts = []
            for request in list(batch):
                try:
                    prompts.append(_prompt_ids(loaded, request))
                except BadRequest as exc:
                    self.replies.send(id=request.id, event="error", status=400, message=str(exc))
                    batch.remove(request)
            if batch:
                self._generate(loaded, batch, prompts)
        except Exception as exc:  # the model does not load or generate: every request of the batch is told
            print(f"generation failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            for request in batch:
                self.replies.send(id=request.id, event="error", status=500, message=f"{type(exc).__name__}: {exc}")
        finally:
            for request in batch:
                self.cancelled.discard(request.id)

    def _generate(self, loaded: LoadedModel, batch: list[Generate], prompts: list[list[int]]) -> None:
        tokenizer = loaded.tokenizer
        rows: list[Row] = []
        sequences: list[list[int]] = []
        for request, prompt in zip(batch, prompts, strict=True):
            self.replies.send(id=request.id, event="started", prompt_tokens=len(prompt))
            for index in range(request.n):
                rows.append(Row(request, index, self.replies, tokenizer))
                sequences.append(prompt)
        width = max(len(ids) for ids in sequences)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(loaded.eos_ids, default=0)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences], device=self.device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences], device=self.device)
        first = batch[0]
        sampling: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p, "top_k": 0}
            if first.seed is not None:
                torch.manual_seed(first.seed)
        max_new = max(request.max_tokens for request in batch)
        if loaded.max_positions is not None:
            max_new = max(min(max_new, loaded.max_positions - width), 1)
        with torch.inference_mode(), _adapter(loaded, first.model.adapter):
            loaded.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new,
                stopping_criteria=[RowsStop(rows, loaded.eos_ids, self.cancelled)],
                pad_token_id=pad,
                **sampling,
            )
        for row in rows:
            if row.request.id not in self.cancelled:
                row.end()
        for request in batch:
            self.replies.send(id=request.id, event="done")

    # -- models ---------------------------------------------------------------------------------------------------
    def _load(self, files: ModelFiles) -> LoadedModel:
        loaded = self.models.get(files.base)
        if loaded is None:
            tokenizer = AutoTokenizer.from_pretrained(files.base)
            model = AutoModelForCausalLM.from_pretrained(files.base, dtype=self.dtype).to(self.device).eval()
            eos = model.generation_config.eos_token_id  # where generate itself stops
            eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
            positions = getattr(model.config, "max_position_embeddings", None)
            loaded = self.models[files.base] = LoadedModel(model, tokenizer, eos_ids, positions)
            self._report(files.base, loaded)
        if files.adapter is not None and files.adapter not in loaded.adapters:
            name = f"adapter{len(loaded.adapters)}"
            if isinstance(loaded.model, PeftModel):
                loaded.model.load_adapter(files.adapter, adapter_name=name)
            else:
                loaded.model = PeftModel.from_pretrained(loaded.model, files.adapter, adapter_name=name)
            loaded.model.eval()
            loaded.adapters[files.adapter] = name
            self._report(files.base, loaded)
        return loaded

    def _report(self, base: str, loaded: LoadedModel) -> None:
        self.replies.send(event="loaded", base=base, bytes=loaded.bytes(), adapters=sorted(loaded.adapters))

    def _unload(self, base: str) -> None:
        if self.models.pop(base, None) is None:
            return
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif self.device == "mps":
            torch.mps.empty_cache()


@contextlib.contextmanager
def _adapter(loaded: LoadedModel, adapter: str | None) -> Iterator[None]:
    model = loaded.model
    if not isinstance(model, PeftModel):
        yield
    elif adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(loaded.adapters[adapter])
        yield


def _batch_key(request: Generate) -> BatchKey:
    if request.temperature <= 0:
        sampling: Any = "greedy"
    elif request.seed is not None:
        sampling = ("seeded", request.id)  # alone: its seed decides its tokens
    else:
        sampling = (request.temperature, request.top_p)
    return request.model.base, request.model.adapter, sampling


def _prompt_ids(loaded: LoadedModel, request: Generate) -> list[int]:
    tokenizer = loaded.tokenizer
    if request.messages is not None:
        if not tokenizer.chat_template:
            raise BadRequest("messages: this model has no chat template; use completions with a prompt")
        text = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    elif isinstance(request.prompt, str):
        ids = tokenizer(request.prompt)["input_ids"]
    else:
        ids = list(request.prompt or [])
    if not ids:
        raise BadRequest("prompt: empty; give at least one token")
    if loaded.max_positions is not None and len(ids) >= loaded.max_positions:
        raise BadRequest(
            f"{'messages' if request.messages is not None else 'prompt'}: {len(ids)} tokens; this model reads at most "
            f"{loaded.max_positions} with the answer"
        )
    return ids


def _dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch-rows", type=int, default=8)
    args = parser.parse_args(argv)
    die_with_parent()
    replies = Replies(os.fdopen(os.dup(sys.stdout.fileno()), "w"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a library's print cannot corrupt the replies
    worker = Worker(args.device, args.max_batch_rows, replies)
    threading.Thread(target=worker.read, args=(sys.stdin,), name="requests", daemon=True).start()
    replies.send(event="ready")
    worker.run()


if __name__ == "__main__":
    main()
