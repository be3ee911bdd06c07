"""The serving provider's spec, found by OGX through ``module: llama_stack_provider_trl.serving`` in ogx-run.yaml."""

from ogx_api import Api, InlineProviderSpec, ProviderSpec


def get_provider_spec() -> ProviderSpec:
    return InlineProviderSpec(
        api=Api.inference,
        provider_type="inline::trl",
        pip_packages=["llama-stack-provider-trl[ogx]"],
        module="llama_stack_provider_trl.serving",
        config_class="llama_stack_provider_trl.serving.config.TrlServingConfig",
        description="Chat completions from this server's fine-tuned models (full, merged or LoRA adapters over their "
        "base) and local models, generated with transformers in a process of its own.",
    )
