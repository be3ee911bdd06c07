"""Serving on OGX: the inference provider (``inline::trl``) that answers ``/v1/chat/completions`` and
``/v1/completions`` with this server's fine-tuned models. Server side: no torch here; the models run in the
generation process (``generation/``)."""

from typing import Any

from llama_stack_provider_trl.serving.config import TrlServingConfig

__all__ = ["get_provider_impl"]


async def get_provider_impl(config: TrlServingConfig, deps: dict[Any, Any]) -> Any:
    from llama_stack_provider_trl.serving.inference import TrlInferenceImpl

    impl = TrlInferenceImpl(config)
    await impl.initialize()
    return impl
