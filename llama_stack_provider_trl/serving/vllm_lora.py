"""A LoRA job's adapter served by a vLLM server instead of the generation process: loaded into the vLLM behind one
of OGX's ``remote::vllm`` inference providers through vLLM's dynamic LoRA endpoints, under the fine-tuned model's
name, so that OGX routes ``chat.completions`` for that name to vLLM.

vLLM must run the adapter's base model with ``--enable-lora`` (and ``--max-lora-rank`` at least the job's
``lora_rank``), with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` in its environment, and must read the adapter's
directory at the path this server gives (the same machine, or a shared file system).
"""

from typing import Any

import httpx

LOAD_TIMEOUT_S = 120.0


class VllmLoraError(Exception):
    """vLLM refused or could not be reached; the message says which and why."""


class VllmAdapters:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        """``base_url``: the OpenAI root of the vLLM server, as OGX's vllm provider has it (``http://host:8000/v1``)."""
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else f"{root}/v1"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @classmethod
    def of_provider(cls, provider: Any) -> "VllmAdapters":
        """The vLLM behind one of OGX's remote::vllm provider implementations."""
        return cls(provider.get_base_url(), provider.get_api_key())

    async def load(self, name: str, adapter_dir: str) -> None:
        await self._post("load_lora_adapter", {"lora_name": name, "lora_path": adapter_dir})

    async def unload(self, name: str) -> None:
        await self._post("unload_lora_adapter", {"lora_name": name})

    async def _post(self, endpoint: str, body: dict[str, str]) -> None:
        url = f"{self.base_url}/{endpoint}"
        try:
            async with httpx.AsyncClient(timeout=LOAD_TIMEOUT_S) as client:
                response = await client.post(url, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise VllmLoraError(f"vLLM at {url} could not be reached: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise VllmLoraError(f"vLLM at {url} answered {response.status_code}: {response.text[:500]}")
