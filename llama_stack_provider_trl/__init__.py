"""Llama Stack post_training provider: DPO preference optimization with Hugging Face TRL."""

from typing import TYPE_CHECKING, Any

from llama_stack_provider_trl.config import TrlPostTrainingConfig

if TYPE_CHECKING:
    from llama_stack_provider_trl.llama_stack.stack_api import AccessRule

__all__ = ["TrlPostTrainingConfig", "get_provider_impl"]


async def get_provider_impl(
    config: TrlPostTrainingConfig, deps: dict[Any, Any], policy: "list[AccessRule] | None" = None
) -> Any:
    """Llama Stack passes ``policy`` (server.auth.access_policy) because this function asks for it by name."""
    from llama_stack_provider_trl.llama_stack.post_training import TrlPostTrainingImpl
    from llama_stack_provider_trl.llama_stack.stack_api import Api

    impl = TrlPostTrainingImpl(config, deps[Api.datasetio], deps[Api.datasets], deps.get(Api.models), policy)
    await impl.initialize()
    return impl
