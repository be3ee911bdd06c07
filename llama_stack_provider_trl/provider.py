"""Provider spec, found by Llama Stack through ``module: llama_stack_provider_trl`` in run.yaml."""

from llama_stack_provider_trl.llama_stack.stack_api import Api, InlineProviderSpec, ProviderSpec


def get_provider_spec() -> ProviderSpec:
    return InlineProviderSpec(
        api=Api.post_training,
        provider_type="inline::trl",
        pip_packages=["llama-stack-provider-trl"],
        module="llama_stack_provider_trl",
        config_class="llama_stack_provider_trl.config.TrlPostTrainingConfig",
        api_dependencies=[Api.datasetio, Api.datasets],
        optional_api_dependencies=[Api.models],  # finetuned_model may name a registered model
        description="DPO preference optimization with Hugging Face TRL, one OS process per job.",
    )
