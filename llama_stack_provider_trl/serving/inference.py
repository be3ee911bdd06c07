"""TrlInferenceImpl: OGX's inference provider for this server's models, answering through OGX's own
``/v1/chat/completions`` and ``/v1/completions``.

Which models: the operator's (config ``models``, listed to every user) and the fine-tuned models the fine-tuning API
registers when a job succeeds (owned by the job's owner: OGX's models table decides who may call them). A name
reaches this provider only through OGX's models table; a fine-tuned one is looked up there again as the caller, so a
``trl/<name>`` call cannot reach a model the caller may not read. Where a name's files are is asked of the sources
the fine-tuning API adds (``add_model_source``): the engine's job records and checkpoints.

The models run in the generation process (worker_client.py); this side checks the request, keeps the memory budget
(budget.py) and turns the process's replies into OpenAI's objects and chunks.
"""

import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

import httpx
import openai
from ogx.log import get_logger
from ogx_api import (
    InferenceProvider,
    Model,
    ModelNotFoundError,
    ModelType,
    OpenAIChatCompletion,
    OpenAIChatCompletionChunk,
    OpenAIChatCompletionRequestWithExtraBody,
    OpenAICompletion,
    OpenAICompletionRequestWithExtraBody,
    OpenAIEmbeddingsRequestWithExtraBody,
    OpenAIEmbeddingsResponse,
)
from ogx_api.inference.models import (
    OpenAIChatCompletionResponseMessage,
    OpenAIChatCompletionUsage,
    OpenAIChoice,
    OpenAIChoiceDelta,
    OpenAIChunkChoice,
    OpenAICompletionChoice,
)

from llama_stack_provider_trl.common.recipe_process import THREAD_VARIABLES
from llama_stack_provider_trl.engine.cpu_threads import usable_cores
from llama_stack_provider_trl.engine.devices import resolve_device
from llama_stack_provider_trl.serving.budget import MemoryBudget, weight_bytes
from llama_stack_provider_trl.serving.config import TrlServingConfig
from llama_stack_provider_trl.serving.protocol import Generate, ModelFiles
from llama_stack_provider_trl.serving.worker_client import GenerationWorker, WorkerGone

logger = get_logger(name=__name__, category="inference")  # OGX's own: its log shows these

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
ModelSource = Callable[[str], ModelFiles | None]  # a registered model's name -> its files, None if not this source's


class ServingRequestError(openai.BadRequestError):
    """A request this provider cannot serve, answered 400 in OpenAI's shape (OGX answers openai's BadRequestError
    cleanly, keeping the connection)."""

    def __init__(self, param: str, message: str) -> None:
        request = httpx.Request("POST", "http://ogx/v1/chat/completions")
        response = httpx.Response(HTTPStatus.BAD_REQUEST, request=request)
        super().__init__(f"{param}: {message}", response=response, body={"param": param})


class GenerationFailed(Exception):
    """The generation process failed the request (500); the message is safe to show."""


class TrlInferenceImpl(InferenceProvider):
    __provider_id__: str

    def __init__(self, config: TrlServingConfig) -> None:
        self.config = config
        self.device = "cpu"
        self.sources: list[ModelSource] = []
        self.budget = MemoryBudget(int(config.memory_budget_gb * 2**30))
        self.loaded_bytes: dict[str, int] = {}  # base directory -> bytes the generation process measured
        self.worker: GenerationWorker | None = None

    async def initialize(self) -> None:
        self.device = resolve_device(self.config.device)
        self.worker = GenerationWorker(
            self.device, self.config.max_batch_rows, self.thread_environment(), on_loaded=self._on_loaded
        )

    async def shutdown(self) -> None:
        if self.worker is not None:
            await self.worker.stop()

    def thread_environment(self) -> dict[str, str]:
        """The generation process's CPU threads: config cpu_threads, else half the usable cores; the operator's
        OMP_NUM_THREADS / MKL_NUM_THREADS win (they pass through unchanged)."""
        import os

        if any(name in os.environ for name in THREAD_VARIABLES):
            return {}
        threads = self.config.cpu_threads or max(usable_cores() // 2, 1)
        return dict.fromkeys(THREAD_VARIABLES, str(threads))

    def add_model_source(self, source: ModelSource) -> None:
        """The fine-tuning API's lookup of a fine-tuned model's files."""
        self.sources.append(source)

    def _on_loaded(self, reply: dict[str, Any]) -> None:
        base, size = reply["base"], int(reply["bytes"])
        self.loaded_bytes[base] = size
        self.budget.measured(base, size)
        logger.info("serving: model loaded", model=base, mib=round(size / 2**20, 1), adapters=len(reply["adapters"]))

    # -- the models table -----------------------------------------------------------------------------------------
    async def should_refresh_models(self) -> bool:
        return False

    async def list_models(self) -> list[Model] | None:
        """The operator's local models, for every user. A name equal to its directory would be shown as
        ``<provider>/<name>`` by OGX; the directory is what this provider is handed back."""
        return [
            Model(
                identifier=name,
                provider_resource_id=path,
                provider_id=self.__provider_id__,
                model_type=ModelType.llm,
                metadata={"served_by": "trl", "local_model": True},
            )
            for name, path in self.config.models.items()
        ]

    async def register_model(self, model: Model) -> Model:
        if self._source_files(model.provider_resource_id or model.identifier) is None and (
            model.provider_resource_id not in self.config.models.values()
        ):
            raise ValueError(
                f"model '{model.identifier}': not a fine-tuned model of this server nor one of the provider's models"
            )
        return model

    async def unregister_model(self, model_id: str) -> None:
        files = self._source_files(model_id)
        if files is not None and files.adapter is None and self.worker is not None:
            self.budget.forget(files.base)
            await self.worker.unload(files.base)

    def _source_files(self, name: str) -> ModelFiles | None:
        for source in self.sources:
            if (files := source(name)) is not None:
                return files
        return None

    async def _files(self, resource_id: str) -> ModelFiles:
        """The files of the model the router handed us, checked again against the models table as the caller."""
        if resource_id in self.config.models.values():
            return ModelFiles(base=resource_id)
        if self.model_store is None:
            raise ModelNotFoundError(resource_id)
        registered = await self.model_store.get_model(resource_id)  # ModelNotFoundError unless the caller may read
        files = self._source_files(registered.provider_resource_id or resource_id)
        if registered.provider_id != self.__provider_id__ or files is None:
            raise ModelNotFoundError(resource_id)
        return files

    # -- completions ----------------------------------------------------------------------------------------------
    async def openai_chat_completion(
        self, params: OpenAIChatCompletionRequestWithExtraBody
    ) -> OpenAIChatCompletion | AsyncIterator[OpenAIChatCompletionChunk]:
        if params.tools:
            raise ServingRequestError("tools", "this provider's models do not call tools; send the request without")
        if params.logprobs:
            raise ServingRequestError("logprobs", "not available from this provider")
        messages = [
            _plain_message(message.model_dump(exclude_none=True), i) for i, message in enumerate(params.messages)
        ]
        request, replies, head = await self._start(params, "chatcmpl", messages=messages)
        if params.stream:
            include_usage = bool((params.stream_options or {}).get("include_usage"))
            return self._chat_chunks(replies, head, request.n, include_usage)
        texts, reasons, usage = await _collect(replies, request.n)
        return OpenAIChatCompletion(
            **head,
            choices=[
                OpenAIChoice(
                    index=i, finish_reason=reasons[i], message=OpenAIChatCompletionResponseMessage(content=texts[i])
                )
                for i in range(request.n)
            ],
            usage=usage,
        )

    async def openai_completion(
        self, params: OpenAICompletionRequestWithExtraBody
    ) -> OpenAICompletion | AsyncIterator[OpenAICompletion]:
        prompt = params.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) != 1:
                raise ServingRequestError("prompt", "give one prompt a request (a string or a list of token ids)")
            prompt = prompt[0]
        given = {"echo": params.echo, "logprobs": params.logprobs, "suffix": params.suffix}
        given["best_of"] = (params.best_of or 1) > 1
        for field, value in given.items():
            if value:
                raise ServingRequestError(field, "not available from this provider; send the request without it")
        request, replies, head = await self._start(params, "cmpl", prompt=prompt)
        if params.stream:
            return self._completion_chunks(replies, head)
        texts, reasons, usage = await _collect(replies, request.n)
        return OpenAICompletion(
            **head,
            choices=[
                OpenAICompletionChoice(index=i, text=texts[i], finish_reason=reasons[i]) for i in range(request.n)
            ],
            usage=usage,
        )

    async def openai_embeddings(self, params: OpenAIEmbeddingsRequestWithExtraBody) -> OpenAIEmbeddingsResponse:
        raise ServingRequestError("model", "this provider's models generate text; they make no embeddings")

    async def _start(
        self, params: Any, id_prefix: str, **prompt: Any
    ) -> tuple[Generate, AsyncIterator[dict[str, Any]], dict[str, Any]]:
        """The request's generation under way: (the request, its replies, the head every response object and chunk of
        it carries: id, created, model)."""
        request = await self._request(params, **prompt)
        head = {"id": f"{id_prefix}-{secrets.token_hex(12)}", "created": int(time.time()), "model": params.model}
        return request, await self._replies(request), head

    async def _request(self, params: Any, **prompt: Any) -> Generate:
        n = params.n or 1
        if n > self.config.max_batch_rows:
            raise ServingRequestError("n", f"at most {self.config.max_batch_rows} choices a request on this server")
        stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        if len(stop) > MAX_STOP_SEQUENCES:
            raise ServingRequestError("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences")
        max_tokens = getattr(params, "max_completion_tokens", None) or params.max_tokens
        return Generate(
            id=secrets.token_hex(8),
            model=await self._files(params.model),
            n=n,
            max_tokens=max_tokens or self.config.default_max_tokens,
            temperature=1.0 if params.temperature is None else params.temperature,
            top_p=1.0 if params.top_p is None else params.top_p,
            seed=params.seed,
            stop=stop,
            skip_special_tokens=(params.model_extra or {}).get("skip_special_tokens", True) is not False,
            **prompt,
        )

    async def _replies(self, request: Generate) -> AsyncIterator[dict[str, Any]]:
        """The generation process's replies, its first one (``started``, or the request's error) already read, so a
        refusal is an error response and not a broken stream."""
        assert self.worker is not None
        for evicted in self.budget.use(request.model.base, weight_bytes(request.model.base)):
            logger.info("serving: unloading a model to stay within memory_budget_gb", model=evicted)
            await self.worker.unload(evicted)
        replies = self.worker.generate(request)
        try:
            first = await anext(replies)
        except WorkerGone as exc:
            raise GenerationFailed(str(exc)) from exc
        if first["event"] == "error":
            await replies.aclose()
            if first["status"] == HTTPStatus.BAD_REQUEST:
                raise ServingRequestError("messages" if request.messages is not None else "prompt", first["message"])
            raise GenerationFailed(f"generation failed: {first['message']}")
        return _prepended(first, replies)

    async def _chat_chunks(
        self,
        replies: AsyncIterator[dict[str, Any]],
        head: dict[str, Any],
        n: int,
        include_usage: bool,
    ) -> AsyncIterator[OpenAIChatCompletionChunk]:
        def chunk(choices: list[OpenAIChunkChoice], usage: OpenAIChatCompletionUsage | None = None) -> Any:
            return OpenAIChatCompletionChunk(**head, choices=choices, usage=usage)

        yield chunk(
            [OpenAIChunkChoice(index=i, delta=OpenAIChoiceDelta(role="assistant", content="")) for i in range(n)]
        )
        usage = OpenAIChatCompletionUsage()
        async for reply in _answers(replies, usage):
            if reply["event"] == "delta":
                yield chunk([OpenAIChunkChoice(index=reply["index"], delta=OpenAIChoiceDelta(content=reply["text"]))])
            else:
                choice = OpenAIChunkChoice(
                    index=reply["index"], delta=OpenAIChoiceDelta(), finish_reason=reply["reason"]
                )
                yield chunk([choice])
        if include_usage:
            yield chunk([], usage)

    async def _completion_chunks(
        self, replies: AsyncIterator[dict[str, Any]], head: dict[str, Any]
    ) -> AsyncIterator[OpenAICompletion]:
        async for reply in _answers(replies, OpenAIChatCompletionUsage()):
            choice = OpenAICompletionChoice.model_construct(  # a delta has no finish_reason yet
                index=reply["index"], text=reply.get("text", ""), finish_reason=reply.get("reason"), logprobs=None
            )
            yield OpenAICompletion(**head, choices=[choice])


async def _prepended(first: dict[str, Any], rest: AsyncGenerator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for reply in rest:
            yield reply
    finally:  # a client that went away: the generation process stops its rows
        await rest.aclose()


async def _collect(
    replies: AsyncIterator[dict[str, Any]], n: int
) -> tuple[list[str], list[Any], OpenAIChatCompletionUsage]:
    texts, reasons = [""] * n, ["stop"] * n
    usage = OpenAIChatCompletionUsage()
    async for reply in _answers(replies, usage):
        if reply["event"] == "delta":
            texts[reply["index"]] += reply["text"]
        else:
            reasons[reply["index"]] = reply["reason"]
    return texts, reasons, usage


async def _answers(
    replies: AsyncIterator[dict[str, Any]], usage: OpenAIChatCompletionUsage
) -> AsyncIterator[dict[str, Any]]:
    """The answers' ``delta`` and ``finished`` replies, their tokens counted in ``usage`` (its total once the replies
    end); an ``error`` reply raises GenerationFailed."""
    async for reply in replies:
        match reply["event"]:
            case "started":
                usage.prompt_tokens = reply["prompt_tokens"]
            case "delta":
                yield reply
            case "finished":
                usage.completion_tokens += reply["tokens"]
                yield reply
            case "error":
                raise GenerationFailed(f"generation failed: {reply['message']}")
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens


def _plain_message(message: dict[str, Any], index: int) -> dict[str, Any]:
    """A chat message as a chat template reads it: its role and its text (text parts joined)."""
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if part.get("type") != "text":
                raise ServingRequestError(f"messages[{index}].content", "only text parts; this model reads text")
            parts.append(part["text"])
        content = "".join(parts)
    return {"role": message["role"], "content": content or ""}
