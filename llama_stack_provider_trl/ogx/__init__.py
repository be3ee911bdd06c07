"""OGX front door: OpenAI's fine-tuning API (``client.fine_tuning.jobs``) over the same engine and recipes.

OGX finds the API through ``apis/fine_tuning.yaml`` (``external_apis_dir``), and this provider through the
provider spec in ``api.available_providers()`` (``inline::trl``). Nothing here imports ``llama_stack_api``.
"""

from typing import Any

from llama_stack_provider_trl.config import TrlPostTrainingConfig

__all__ = ["get_provider_impl"]


async def get_provider_impl(config: TrlPostTrainingConfig, deps: dict[Any, Any], policy: Any = None) -> Any:
    """OGX passes ``policy`` (server.auth.access_policy) because this function asks for it by name."""
    from ogx_api import Api

    from llama_stack_provider_trl.ogx.fine_tuning import TrlFineTuningImpl

    impl = TrlFineTuningImpl(config, deps[Api.files], policy, deps.get(Api.models))
    await impl.initialize()
    return impl
