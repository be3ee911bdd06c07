"""Llama Stack post_training provider: DPO preference optimization with Hugging Face TRL."""

from typing import Any

from llama_stack_provider_trl.config import TrlPostTrainingConfig

__all__ = ["TrlPostTrainingConfig", "get_provider_impl"]


async def get_provider_impl(config: TrlPostTrainingConfig, deps: dict[Any, Any]) -> Any:
    from llama_stack_provider_trl.post_training import TrlPostTrainingImpl
    from llama_stack_provider_trl.stack_api import Api

    impl = TrlPostTrainingImpl(config, deps[Api.datasetio], deps[Api.datasets], deps.get(Api.models))
    await impl.initialize()
    return impl
