"""What the server and the generation process say to each other: one JSON object a line, over the process's stdin
(requests) and stdout (replies). No torch here: both sides import it.

Server to process: ``generate`` (a request: its model, its prompt or chat messages, its sampling settings),
``cancel`` (a request's client went away), ``unload`` (a model leaves memory).
Process to server: ``started`` (the prompt's token count), ``delta`` (new text of one choice), ``finished`` (one
choice ended, why, and its token count), ``done`` (every choice ended), ``error`` (the request failed, a status and
a message for the caller), ``loaded`` (a model is in memory, its bytes).
"""

from typing import Any, Literal

from pydantic import BaseModel


class ModelFiles(BaseModel):
    """A model as the generation process loads it: a full model directory, or an adapter over its base."""

    base: str  # the directory of the full model (the adapter's base for an adapter)
    adapter: str | None = None  # a LoRA adapter directory, loaded over ``base``


class Generate(BaseModel):
    op: Literal["generate"] = "generate"
    id: str
    model: ModelFiles
    messages: list[dict[str, Any]] | None = None  # chat: rendered with the model's chat template
    prompt: str | list[int] | None = None  # completions: text, or token ids
    n: int = 1
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = []
    skip_special_tokens: bool = True  # vLLM's extra field of the same name: False shows them in the text


class Cancel(BaseModel):
    op: Literal["cancel"] = "cancel"
    id: str


class Unload(BaseModel):
    op: Literal["unload"] = "unload"
    base: str


Request = Generate | Cancel | Unload
FinishReason = Literal["stop", "length"]
