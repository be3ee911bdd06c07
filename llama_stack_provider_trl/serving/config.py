"""The serving provider's configuration: the ``config:`` block of the ``inline::trl`` inference provider in
ogx-run.yaml."""

from typing import Any

from pydantic import BaseModel, Field


class TrlServingConfig(BaseModel):
    """How this server's fine-tuned models (and the local models the operator lists) answer chat completions."""

    device: str = Field(
        default="auto", description="Where models generate: auto (cuda > mps > cpu), cpu, mps, cuda or cuda:N."
    )
    memory_budget_gb: float = Field(
        default=8.0,
        gt=0,
        description="Weights the generation process keeps loaded, in GiB. Loading one more model unloads the least "
        "recently used until it fits; a model larger than the budget loads alone.",
    )
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of the generation process. null: half the server's usable cores (at least 1); the "
        "rest stay with training jobs. OMP_NUM_THREADS or MKL_NUM_THREADS in the server's environment win.",
    )
    max_batch_rows: int = Field(
        default=8,
        ge=1,
        description="Sequences generated together in one batch (every choice of every request counts); also the "
        "largest n a request may ask for.",
    )
    default_max_tokens: int = Field(
        default=512,
        ge=1,
        description="Tokens generated for a request that sets neither max_tokens nor max_completion_tokens.",
    )
    vllm_provider_id: str | None = Field(
        default=None,
        description="The provider_id of a remote::vllm inference provider in the same run config: a succeeded LoRA "
        "job's adapter is loaded into that vLLM (its dynamic LoRA loading) and served there under the same name. "
        "null: every fine-tuned model is served here.",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Local models every user may call, by name: {name: model directory}. Fine-tuned models need no "
        "entry: a job that succeeds registers its own.",
    )

    @classmethod
    def sample_run_config(cls, __distro_dir__: str = "~/.ogx/distributions/trl", **kwargs: Any) -> dict[str, Any]:
        return {
            "device": "${env.TRL_DEVICE:=auto}",
            "memory_budget_gb": "${env.TRL_SERVING_MEMORY_GB:=8}",
        }
