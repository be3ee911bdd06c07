"""Provider configuration: the `config:` block of the post_training provider in run.yaml."""

import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

# Every loss the pinned TRL's DPOTrainer implements (trl/trainer/dpo_config.py; the version: docs/versions.md).
TRL_DPO_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

# Every GRPO loss TRL's GRPOTrainer implements at the token level (trl/trainer/grpo_config.py); luspo needs
# sequence-level importance sampling, which no request sets.
GrpoLossType = Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo"]

# normalize_rewards: the loss each DPO loss runs as with length-normalized implicit rewards (per-token average
# log-ratios). sigmoid_norm and ipo average per token already; the other losses have no such form in the pinned TRL.
LENGTH_NORMALIZED_LOSS: dict[str, str] = {"sigmoid": "sigmoid_norm", "sigmoid_norm": "sigmoid_norm", "ipo": "ipo"}

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

WARM_STANDBY_MIN_CPUS = 8

# A field marked PER_JOB may be overridden by one request for its own job (hyperparam_search_config). The rest
# (where jobs live, which device, whether remote code may run, how many jobs run at once) belong to whoever runs
# the server.
PER_JOB: dict[str, Any] = {"per_job": True}


def check_loss_type(loss_type: str) -> str:
    """Return ``loss_type`` if the pinned TRL implements it, else raise ValueError saying what to use."""
    if loss_type in TRL_DPO_LOSS_TYPES:
        return loss_type
    supported = ", ".join(TRL_DPO_LOSS_TYPES)
    if loss_type == "kto_pair":
        raise ValueError(
            "'kto_pair' was removed from TRL's DPOTrainer (TRL >= 0.29) and this TRL has no equivalent DPO loss; "
            f"use one of: {supported} (KTO itself lives in TRL's KTOTrainer, which this provider does not run)"
        )
    raise ValueError(f"unknown DPO loss '{loss_type}'; this TRL's DPOTrainer supports: {supported}")


def length_normalized(losses: list[str]) -> list[str]:
    """The losses with length-normalized implicit rewards; ValueError naming the first loss that has none."""
    for loss in losses:
        if loss not in LENGTH_NORMALIZED_LOSS:
            raise ValueError(
                f"loss '{loss}' has no length-normalized form, so normalize_rewards cannot apply to it; use "
                f"{' or '.join(LENGTH_NORMALIZED_LOSS)}, or set normalize_rewards false"
            )
    return [LENGTH_NORMALIZED_LOSS[loss] for loss in losses]


class TrlPostTrainingConfig(BaseModel):
    """Defaults for every DPO job this provider runs. Request values win where the request sets them."""

    output_dir: str = Field(
        default="~/.llama/distributions/trl/post_training",
        description="Root of every job's directory: <output_dir>/<job_uuid>/ holds its data, log and checkpoints.",
    )
    device: str = Field(
        default="auto",
        description="auto (cuda > mps > cpu), cpu, mps, cuda or cuda:N.",
    )
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        default="auto",
        description="auto: bf16 where the device supports it, fp16 on a GPU that lacks bf16, none on CPU. "
        "A request's training_config.dtype, when it sets one, wins.",
    )
    dpo_beta: float = Field(
        default=0.1,
        gt=0,
        description="DPO beta used when a request does not carry one. Llama Stack 0.6.1's schema requires "
        "algorithm_config.beta, so there the request's value always wins; front doors whose requests may omit beta "
        "(or say auto) use this.",
    )
    dpo_loss_type: str | list[str] = Field(
        default="sigmoid",
        description="Any DPO loss of TRL's DPOTrainer, or a list of them combined with loss_weights (e.g. [sigmoid, "
        "sft] = RPO). Used unless the request sets algorithm_config.loss_type.",
        json_schema_extra=PER_JOB,
    )
    loss_weights: list[float] | None = Field(
        default=None,
        description="One weight per loss in dpo_loss_type (TRL loss_weights); null: every loss weighs 1.",
        json_schema_extra=PER_JOB,
    )
    use_reference_model: bool = Field(
        default=True,
        description="True: a reference model scores the reference log-probs during training: a frozen copy of the "
        "initial model, or with LoRA the same model with its adapters disabled (no second copy). False: the "
        "reference log-probs are computed once before training (TRL precompute_ref_log_probs), so no reference "
        "forward runs during training and no second copy stays in memory.",
        json_schema_extra=PER_JOB,
    )
    normalize_rewards: bool = Field(
        default=False,
        description="Length-normalized implicit rewards: the policy/reference log-ratios are averaged per completion "
        "token instead of summed, so long answers do not dominate. sigmoid runs as TRL's sigmoid_norm; ipo and "
        "sigmoid_norm already average; any other loss is refused. false: standard (summed) DPO.",
        json_schema_extra=PER_JOB,
    )
    num_generations: int = Field(
        default=8,
        ge=2,
        le=1024,
        description="Reinforcement jobs: answers sampled per prompt (TRL num_generations), the group whose rewards "
        "are compared; a request's compute_multiplier scales it.",
        json_schema_extra=PER_JOB,
    )
    max_completion_length: int = Field(
        default=256,
        ge=1,
        le=131_072,
        description="Reinforcement jobs: the longest sampled answer in tokens; longer answers are cut (and counted "
        "as clipped).",
        json_schema_extra=PER_JOB,
    )
    temperature: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Reinforcement jobs: sampling temperature of the answers.",
        json_schema_extra=PER_JOB,
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Reinforcement jobs: nucleus sampling of the answers.",
        json_schema_extra=PER_JOB,
    )
    grpo_beta: float = Field(
        default=0.0,
        ge=0,
        le=1_000,
        description="Reinforcement jobs: weight of the KL penalty against the initial model (TRL beta). 0: no "
        "reference model is loaded or run.",
        json_schema_extra=PER_JOB,
    )
    grpo_loss_type: GrpoLossType = Field(
        default="dapo",
        description="Reinforcement jobs: TRL's GRPO loss_type (how token losses are aggregated or clipped).",
        json_schema_extra=PER_JOB,
    )
    max_seq_length: int = Field(
        default=1024,
        ge=8,
        description="Longest prompt+completion in tokens (TRL max_length); longer is truncated.",
        json_schema_extra=PER_JOB,
    )
    pad_to_multiple_of: int | Literal["auto"] | None = Field(
        default="auto",
        description="Pad each batch to a multiple of this many tokens: fewer distinct shapes for the GPU's kernels. "
        "auto: 128 on CUDA, no padding elsewhere. null: no padding.",
        json_schema_extra=PER_JOB,
    )
    group_by_length: bool = Field(
        default=True,
        description="Put pairs of similar length in the same batch (Trainer's LengthGroupedSampler), so less of "
        "each batch is padding. Applies when data_config.shuffle is true.",
        json_schema_extra=PER_JOB,
    )
    padding_free: bool | Literal["auto"] = Field(
        default="auto",
        description="Compute no padding: each batch runs as one packed row of its real tokens, with attention kept "
        "inside each sequence (FlashAttention's variable-length kernel on CUDA in bf16/fp16, per-sequence SDPA "
        "elsewhere). Same losses as padded batches up to float rounding. Needs a model whose attention is "
        "pluggable and full (Llama, Qwen2, Mistral without sliding window, ...); pad_to_multiple_of is then unused. "
        "auto: packed where the FlashAttention kernel runs and the model can be packed, padded elsewhere (no error).",
        json_schema_extra=PER_JOB,
    )
    master_weights: Literal["model", "optimizer"] = Field(
        default="model",
        description="Full fine-tuning in bf16: where the fp32 master weights live. model: the model's weights are "
        "fp32 and forward/backward run under bf16 autocast. optimizer: the model's weights are bf16 (no casts, "
        "bf16 activations) and the optimizer keeps fp32 copies that it updates and writes back rounded, so small "
        "updates still add up; checkpoints then hold bf16 weights, and gradients accumulate in bf16. Not for fp16. "
        "No effect in fp32 (the weights are the masters) or with LoRA (its adapters are fp32).",
        json_schema_extra=PER_JOB,
    )
    torch_compile: bool = Field(
        default=False,
        description="Compile each decoder layer with torch.compile (dynamic shapes: one compiled graph for every "
        "layer and batch length). Fuses the norms, rotary embedding, activations and casts between the matmuls into "
        "a few kernels, for steps that are bound by launching many small ones. The first step waits for the "
        "compilation (later jobs reuse the compiler's cache). Same weights and checkpoints. CUDA "
        "(Triton) or CPU (needs a C++ compiler); not MPS.",
        json_schema_extra=PER_JOB,
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations to save memory. A request's "
        "efficiency_config.enable_activation_checkpointing, when set, wins.",
        json_schema_extra=PER_JOB,
    )
    use_lora: bool = Field(
        default=False, description="Train LoRA adapters (peft) instead of every weight.", json_schema_extra=PER_JOB
    )
    lora_rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r.", json_schema_extra=PER_JOB)
    lora_alpha: float = Field(
        default=32.0,
        gt=0,
        description="LoRA scaling alpha (the update is scaled by alpha/r).",
        json_schema_extra=PER_JOB,
    )
    lora_dropout: float = Field(
        default=0.05, ge=0, lt=1, description="Dropout on the LoRA branch.", json_schema_extra=PER_JOB
    )
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Module names to adapt; all-linear: every linear layer but the output head (lm_head).",
        json_schema_extra=PER_JOB,
    )
    qlora: bool = Field(
        default=False,
        description="Load the frozen base model in 4-bit (bitsandbytes NF4) under the LoRA adapters. Needs use_lora, "
        "CUDA and bitsandbytes.",
        json_schema_extra=PER_JOB,
    )
    merge_adapter: bool = Field(
        default=False,
        description="With LoRA, also save a merged full model (checkpoint '<job>-final-merged') that loads with "
        "AutoModelForCausalLM; the adapter itself is always saved.",
        json_schema_extra=PER_JOB,
    )
    save_every_epoch: bool = Field(
        default=True,
        description="Save a checkpoint (model, tokenizer, optimizer state) at the end of every epoch, besides the "
        "final model.",
        json_schema_extra=PER_JOB,
    )
    save_total_limit: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many epoch checkpoints (the oldest are deleted); the final model is kept "
        "apart. null: keep all.",
        json_schema_extra=PER_JOB,
    )
    learning_rate: float = Field(
        default=1e-6, gt=0, description="Used when the request has no optimizer_config (TRL's DPO default)."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="Used when the request has no optimizer_config.")
    warmup_steps: int = Field(default=0, ge=0, description="Used when the request has no optimizer_config.")
    logging_steps: int = Field(
        default=1, ge=1, description="Optimizer steps between metric updates in job status.", json_schema_extra=PER_JOB
    )
    seed: int = Field(default=42, description="Seed for data order and initialization.", json_schema_extra=PER_JOB)
    num_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1,
        description="Training processes for one job on this machine, one per GPU (or CPU processes over gloo), "
        "started by `accelerate launch`; the request's data_config.batch_size is the global batch, split evenly "
        "between them. auto: one per visible GPU (1 without a GPU).",
        json_schema_extra=PER_JOB,
    )
    max_num_processes: int | None = Field(
        default=None,
        ge=1,
        description="Most training processes (ranks, Ray workers) one job may start; a job asking for more is refused "
        "(HTTP 400). Locally a job is also held to the visible GPUs (CUDA) or usable cores (CPU), on Ray to the "
        "cluster's workers. null: only those limits.",
    )
    distributed_strategy: Literal["ddp", "fsdp2", "auto"] = Field(
        default="auto",
        description="With several processes: ddp (every process holds the whole model, gradients are averaged) or "
        "fsdp2 (weights, gradients and optimizer state sharded across the GPUs, FULL_SHARD; CUDA only). auto: "
        "fsdp2 when the model, its gradients, optimizer state and reference do not fit one GPU, else ddp. Job "
        "status says which one ran.",
        json_schema_extra=PER_JOB,
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="local: a job's processes run on this machine. ray: each job runs as a Ray Train TorchTrainer on "
        "the Ray cluster at ray_address, num_processes workers placed by the cluster (device: cpu or cuda, one GPU "
        "per worker); output_dir must then be a path every node reaches (a shared filesystem).",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster's address for executor ray, as ray.init takes it (host:port of the head's GCS).",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow models that ship their own Python code. Off unless you trust the model."
    )
    max_concurrent_jobs: int = Field(
        default=1, ge=1, description="Jobs training at once; later submissions wait as 'scheduled'."
    )
    cancel_grace_period_s: float = Field(
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a running job is cancelled."
    )
    warm_standby: bool | Literal["auto"] = Field(
        default="auto",
        description="Keep one training process started ahead, its torch/transformers/TRL imports done, so a job "
        "skips them and reaches its first step sooner. It holds CPU memory (no GPU memory) while it waits, and the "
        f"next one imports while a job runs. auto: on with {WARM_STANDBY_MIN_CPUS} or more CPU cores, where that "
        "import takes no time from the running job; off on smaller machines.",
    )
    job_store_path: str = Field(
        default="~/.llama/distributions/trl/post_training_jobs.db",
        description="sqlite database holding every job's record, so status and history survive a restart.",
    )
    resume_interrupted_jobs: bool = Field(
        default=True,
        description="A job the server was running when it stopped is resumed from its last Trainer checkpoint "
        "after a restart (or run again, if a clean shutdown stopped it before its first checkpoint). False: it is "
        "failed (after a crash) or cancelled (on shutdown).",
    )
    max_queued_jobs_per_user: int | None = Field(
        default=None,
        ge=1,
        description="Jobs one user may have unfinished (queued, paused or running); one more, or resuming a paused "
        "one beyond it, is refused (HTTP 429), so no user fills the queue. Users are the server's authenticated "
        "principals; without server.auth every caller counts as one user. null: no limit.",
    )
    max_logged_steps_per_job: int = Field(
        default=100_000,
        ge=1,
        description="Most logged steps (the job's steps / logging_steps) one job may have, each an event the server "
        "reads, lists and draws; a job that would log more is refused (HTTP 400) naming logging_steps.",
    )
    max_checkpoints_per_job: int = Field(
        default=100,
        ge=1,
        description="Most epoch checkpoints one job may keep (n_epochs, or save_total_limit when it is set); a job "
        "that would keep more is refused (HTTP 400) naming save_total_limit.",
    )
    max_running_jobs_per_user: int | None = Field(
        default=None,
        ge=1,
        description="Jobs of one user training at once; a user's next job waits in the queue (its status says why) "
        "while later jobs of other users start. Users as for max_queued_jobs_per_user. null: no limit.",
    )
    unowned_jobs_owner: str | None = Field(
        default=None,
        description="A principal given at start-up to every stored job that has no owner (jobs recorded before "
        "server.auth was on, which every user could otherwise read, cancel and train from). It is stored: the jobs "
        "stay theirs after this is unset. null: such jobs stay open to every user.",
    )
    hub_models: bool = Field(
        default=True,
        description="Whether a request may name a Hugging Face Hub model id (downloaded by the server's processes, "
        "with the Hub token only when job_environment names HF_TOKEN). false: local model directories and earlier "
        "jobs' checkpoints only (HTTP 403 for a Hub id), and jobs run with HF_HUB_OFFLINE=1.",
    )
    show_server_paths: bool | Literal["auto"] = Field(
        default="auto",
        description="Whether job status shows callers the server's paths (job_dir, log_path, the trackers' "
        "directories) and the job's process id; hidden, a job's error names them by what they are (<job_dir>, "
        "<python>, ~). auto: shown on a server without authentication, hidden with it.",
    )
    allowed_model_dirs: list[str] | None = Field(
        default=None,
        description="Directories a request's local finetuned_model must lie in, symlinks resolved (HTTP 403 "
        "outside them); the outputs of a caller's own earlier jobs are allowed too. null: any local model directory.",
    )
    check_disk_space: bool = Field(
        default=True,
        description="Refuse a job whose estimated checkpoints (weights or adapter, optimizer state per kept epoch "
        "checkpoint, final model) do not fit in the free space of output_dir's disk (HTTP 507). Models whose "
        "safetensors files are not on this machine are not estimated.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Where jobs that ask for MLflow (logger_config.mlflow) record their runs: a tracking server "
        "(http://...) or a store on this machine (sqlite:///path/mlflow.db) that every job shares. None: each job "
        "records into its own <job_dir>/mlflow.db. A request may name only an http(s) server on tracker_hosts.",
    )
    tracker_hosts: list[str] = Field(
        default=[],
        description="Hosts a request's tracker may send a job's runs to: an MLflow tracking_uri the request names, "
        "and the W&B server of online runs (WANDB_BASE_URL, else api.wandb.ai). Each entry is a host name, a "
        "subdomain pattern (*.example.com) or an address or network (10.0.0.0/8); a name resolving to a private, "
        "loopback or link-local address is refused unless a listed network holds that address (HTTP 403). "
        "Empty: requests name no tracking server and W&B runs offline only.",
    )
    job_environment: list[str] = Field(
        default=[],
        description="Server environment variables a job's processes get besides those a training process needs "
        "(PATH, HOME, locale, Python, CUDA, threads, Hugging Face and torch settings: docs/config.md). Credentials "
        "(MLFLOW_TRACKING_TOKEN, WANDB_API_KEY, HF_TOKEN, cloud keys) reach a job only when named here.",
    )
    max_train_rows: int = Field(
        default=1_000_000, ge=1, description="Larger training sets are refused at request time (HTTP 413)."
    )
    max_training_file_bytes: int = Field(
        default=256 << 20,
        ge=1,
        description="Largest uploaded file (training_file, validation_file) an OGX job may name, in bytes; a larger "
        "one is refused before it is read (HTTP 413). The Files API hands a file over whole, so this bounds the "
        "memory one request takes.",
    )
    max_field_chars: int = Field(
        default=200_000,
        ge=1,
        description="Longest prompt/chosen/rejected accepted, in characters (a list of messages counts their "
        "contents; HTTP 413 above it).",
    )
    grader_model_base_url: str | None = Field(
        default=None,
        description="The OpenAI-compatible server (base URL ending in /v1) that score_model and label_model graders "
        "call for /chat/completions. None: such graders are refused. A request never names a host.",
    )
    grader_model_api_key_env: str | None = Field(
        default=None,
        description="The environment variable holding the grader model server's API key (sent as a bearer token).",
    )
    grader_model_timeout_s: float = Field(default=60.0, gt=0, description="One grader model call's time limit.")
    grader_model_concurrency: int = Field(
        default=8, ge=1, description="Grader model calls in flight at once while a batch is graded."
    )
    grader_embedding_model: str | None = Field(
        default=None,
        description="The embeddings model text_similarity's cosine metric uses. None: cosine is refused.",
    )
    grader_embedding_base_url: str | None = Field(
        default=None, description="The server of grader_embedding_model (/embeddings); default grader_model_base_url."
    )
    python_grader_timeout_s: float = Field(
        default=10.0, gt=0, description="Wall time a python grader's grade() may take for one sample."
    )
    python_grader_cpu_s: float = Field(
        default=10.0, gt=0, description="CPU time a python grader's grade() may take for one sample."
    )
    python_grader_memory_mb: int = Field(
        default=1024, ge=64, description="Address space of a python grader's process (RLIMIT_AS), in MiB."
    )
    python_grader_workers: int = Field(
        default=2, ge=1, description="Warm sandbox processes kept per python grader source."
    )

    @field_validator("pad_to_multiple_of")
    @classmethod
    def _check_pad_multiple(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, 'auto' or null, got {value}")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if not _DEVICE_PATTERN.match(device):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got '{device}'")
        return device

    @field_validator("dpo_loss_type")
    @classmethod
    def _check_loss_type(cls, loss_type: str | list[str]) -> str | list[str]:
        if isinstance(loss_type, str):
            return check_loss_type(loss_type)
        if not loss_type:
            raise ValueError("dpo_loss_type: give at least one loss")
        return [check_loss_type(name) for name in loss_type]

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        losses = self.loss_types
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} weights for {len(losses)} losses {losses}; "
                "give one weight per loss in dpo_loss_type"
            )
        if self.qlora and not self.use_lora:
            raise ValueError("qlora trains LoRA adapters over a 4-bit base model: set use_lora true as well")
        if self.executor == "ray" and not self.ray_address:
            raise ValueError("executor ray needs ray_address, the address of the Ray cluster's head (host:port)")
        if self.executor == "ray" and self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"executor ray: set device to cpu or cuda, the device of the Ray workers (got '{self.device}'; the "
                "server does not see the cluster's devices)"
            )
        if self.merge_adapter and not self.use_lora:
            raise ValueError("merge_adapter applies to LoRA runs only: set use_lora true, or merge_adapter false")
        if self.normalize_rewards:
            length_normalized(losses)  # dpo_loss_type: a loss without a normalized form is refused here
        return self

    @property
    def loss_types(self) -> list[str]:
        return [self.dpo_loss_type] if isinstance(self.dpo_loss_type, str) else list(self.dpo_loss_type)

    @classmethod
    def sample_run_config(cls, __distro_dir__: str = "~/.llama/distributions/trl", **kwargs: Any) -> dict[str, Any]:
        return {
            "output_dir": "${env.TRL_OUTPUT_DIR:=" + __distro_dir__ + "/post_training}",
            "device": "${env.TRL_DEVICE:=auto}",
            "mixed_precision": "${env.TRL_MIXED_PRECISION:=auto}",
            "dpo_beta": 0.1,
            "dpo_loss_type": "sigmoid",
            "use_reference_model": True,
            "normalize_rewards": False,
            "max_seq_length": 1024,
            "gradient_checkpointing": False,
            "max_concurrent_jobs": "${env.TRL_MAX_CONCURRENT_JOBS:=1}",
            "warm_standby": "${env.TRL_WARM_STANDBY:=auto}",
            "job_store_path": "${env.SQLITE_STORE_DIR:=" + __distro_dir__ + "}/post_training_jobs.db",
            "resume_interrupted_jobs": "${env.TRL_RESUME_INTERRUPTED_JOBS:=true}",
        }


PER_JOB_FIELDS: frozenset[str] = frozenset(
    name for name, field in TrlPostTrainingConfig.model_fields.items() if field.json_schema_extra == PER_JOB
)
