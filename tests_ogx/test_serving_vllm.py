"""The vLLM path of serving (no GPU here, so no vLLM): the requests that load and unload a LoRA job's adapter, sent
to a stand-in vLLM on 127.0.0.1 that records them, with the address and key OGX's own remote::vllm provider has."""

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ogx.providers.remote.inference.vllm.config import VLLMInferenceAdapterConfig
from ogx.providers.remote.inference.vllm.vllm import VLLMInferenceAdapter

from llama_stack_provider_trl.serving.vllm_lora import VllmAdapters, VllmLoraError


class StandInVllm:
    """Answers vLLM's dynamic LoRA endpoints as vLLM does (200, a line of text), or with ``refuse`` (400)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refuse: str | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, answer = (400, stand_in.refuse) if stand_in.refuse else (200, "Success")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer.encode())))
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def vllm() -> Iterator[StandInVllm]:
    stand_in = StandInVllm()
    thread = threading.Thread(target=stand_in.server.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    stand_in.server.shutdown()


def test_a_lora_adapter_is_loaded_and_unloaded_through_vllms_dynamic_lora_endpoints(vllm: StandInVllm) -> None:
    config = {"base_url": vllm.url, "api_token": "vllm-key"}  # as ogx-run.yaml gives it
    provider = VLLMInferenceAdapter(config=VLLMInferenceAdapterConfig.model_validate(config))
    adapters = VllmAdapters.of_provider(provider)

    asyncio.run(adapters.load("ft:base:trl:ftjob-1", "/srv/jobs/ftjob-1/checkpoints/final"))
    asyncio.run(adapters.unload("ft:base:trl:ftjob-1"))

    assert vllm.requests == [
        {
            "path": "/v1/load_lora_adapter",
            "body": {"lora_name": "ft:base:trl:ftjob-1", "lora_path": "/srv/jobs/ftjob-1/checkpoints/final"},
            "auth": "Bearer vllm-key",
        },
        {"path": "/v1/unload_lora_adapter", "body": {"lora_name": "ft:base:trl:ftjob-1"}, "auth": "Bearer vllm-key"},
    ]


def test_a_vllm_that_refuses_or_is_gone_is_said_in_words(vllm: StandInVllm) -> None:
    vllm.refuse = "The lora adapter 'ft:x' has already been loaded."
    with pytest.raises(VllmLoraError, match="answered 400: The lora adapter 'ft:x' has already been loaded"):
        asyncio.run(VllmAdapters(vllm.url.removesuffix("/v1")).load("ft:x", "/srv/adapter"))  # /v1 added to a root
    vllm.server.shutdown()
    vllm.server.server_close()
    with pytest.raises(VllmLoraError, match="could not be reached"):
        asyncio.run(VllmAdapters(vllm.url).load("ft:x", "/srv/adapter"))
