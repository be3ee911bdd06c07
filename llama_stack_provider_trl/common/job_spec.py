"""What one training process needs to know, resolved from the request and the provider config.

The server writes it as ``job.json`` in the job's directory; the recipe process reads it. It holds
only plain values, so the recipe never imports Llama Stack.
"""

from pathlib import Path
from typing import Literal, Self, get_args

from pydantic import BaseModel, Field

Precision = Literal["auto", "bf16", "fp16", "fp32"]
OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
# frozen_copy: a second, frozen model; adapters_disabled: the LoRA model with its adapters off (no copy);
# precomputed_log_probs: the initial model scores every row once before training (no reference while training).
ReferenceStrategy = Literal["frozen_copy", "adapters_disabled", "precomputed_log_probs"]
DistributedStrategy = Literal["ddp", "fsdp2"]

JOB_SPEC_FILE = "job.json"
TRAIN_DATA_FILE = "train.jsonl"
EVAL_DATA_FILE = "eval.jsonl"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"
# Present while the server asks the job to pause: the recipe saves a resumable checkpoint after its step and exits.
PAUSE_REQUEST_FILE = "pause.request"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"


class LoraSpec(BaseModel):
    rank: int
    alpha: float
    dropout: float
    target_modules: list[str] | Literal["all-linear"]
    use_dora: bool = Field(default=False, description="DoRA: weight-decomposed LoRA (peft use_dora).")
    quantize_4bit: bool = Field(description="QLoRA: the frozen base model is loaded in 4-bit NF4.")
    merge_adapter: bool = Field(description="Also save base + adapter merged into one full model.")


class MlflowSpec(BaseModel):
    tracking_uri: str
    experiment_name: str


class WandbSpec(BaseModel):
    project: str
    mode: Literal["offline", "online"] = Field(description="offline: the run stays in <job_dir>/wandb.")
    name: str | None = Field(default=None, description="The run's display name; None: the job's id.")
    entity: str | None = Field(default=None, description="The W&B team or user; None: the API key's default.")
    tags: list[str] = []


class TrackersSpec(BaseModel):
    """Experiment trackers the job reports its logged metrics to, besides its events (0.6.1's logger_config, OGX's
    integrations). Their runs are named after the job."""

    tensorboard: bool = Field(default=False, description="Event files in <job_dir>/tensorboard.")
    mlflow: MlflowSpec | None = None
    wandb: WandbSpec | None = None

    def names(self) -> list[str]:
        return [name for name in ("tensorboard", "mlflow", "wandb") if getattr(self, name)]


class JobSpecBase(BaseModel):
    """What every training job needs, whichever algorithm it runs; each algorithm's spec adds its own fields
    (algorithms/<name>.py). ``JobSpecBase.read`` reads any job's shared part."""

    algorithm: str = Field(default="dpo", description="Its algorithm (algorithms/); none in job.json: a DPO job.")

    job_uuid: str
    model: str = Field(description="Hub id or local directory of the model to train.")
    job_dir: str
    device: str = Field(description="Resolved device: cpu, mps, cuda or cuda:N.")
    precision: Precision = Field(description="auto is resolved by the recipe on the device it gets.")
    lora: LoraSpec | None = Field(default=None, description="None: every weight trains.")
    n_epochs: int
    max_steps_per_epoch: int | None = Field(description="None: every batch of every epoch.")
    batch_size: int = Field(description="The global batch: split evenly over num_processes.")
    num_processes: int = Field(default=1, description="Training processes (ranks) on this machine.")
    distributed_strategy: DistributedStrategy = Field(
        default="ddp", description="How several processes share the model (no effect with one)."
    )
    ray_address: str | None = Field(
        default=None, description="Run as a Ray Train job on this cluster (executor: ray); None: on this machine."
    )
    gradient_accumulation_steps: int
    shuffle: bool
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    optimizer: OptimizerName
    max_seq_length: int
    pad_to_multiple_of: int | None = Field(default=None, description="Pad batches to a multiple of this length.")
    group_by_length: bool = Field(default=False, description="Batch rows of similar length (when shuffling).")
    padding_free: bool | Literal["auto"] = Field(
        default=False, description="Run each batch packed, computing no padding (auto: where FlashAttention runs)."
    )
    master_weights: Literal["model", "optimizer"] = Field(
        default="model", description="Where a full fine-tune's fp32 weights live (see the provider config)."
    )
    torch_compile: bool = Field(default=False, description="Compile each decoder layer (torch.compile).")
    gradient_checkpointing: bool
    activation_offloading: bool
    logging_steps: int
    save_every_epoch: bool = True
    save_total_limit: int | None = None
    seed: int
    trust_remote_code: bool
    num_rows: int
    num_eval_rows: int = Field(default=0, description="Rows in eval.jsonl; 0: no validation set.")
    trackers: TrackersSpec = Field(default_factory=TrackersSpec)

    @property
    def parallel_strategy(self) -> DistributedStrategy | None:
        """How the job's ranks share the model; None for one plain process (no launcher, no process group)."""
        if self.num_processes > 1 or self.distributed_strategy == "fsdp2":
            return self.distributed_strategy
        return None

    @property
    def path(self) -> Path:
        return Path(self.job_dir)

    def write(self) -> Path:
        target = self.path / JOB_SPEC_FILE
        target.write_text(self.model_dump_json(indent=2))
        return target

    @classmethod
    def read(cls, job_dir: str | Path) -> Self:
        return cls.model_validate_json((Path(job_dir) / JOB_SPEC_FILE).read_text())
