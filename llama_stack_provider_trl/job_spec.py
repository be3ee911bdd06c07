"""What one training process needs to know, resolved from the request and the provider config.

The server writes it as ``job.json`` in the job's directory; the recipe process reads it. It holds
only plain values, so the recipe never imports Llama Stack.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Precision = Literal["auto", "bf16", "fp16", "fp32"]
OptimizerName = Literal["adamw", "adam", "sgd"]
ReferenceStrategy = Literal["frozen_copy", "precomputed_log_probs"]

JOB_SPEC_FILE = "job.json"
TRAIN_DATA_FILE = "train.jsonl"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"


class DPOJobSpec(BaseModel):
    job_uuid: str
    model: str = Field(description="Hub id or local directory of the model to train.")
    job_dir: str
    device: str = Field(description="Resolved device: cpu, mps, cuda or cuda:N.")
    precision: Precision = Field(description="auto is resolved by the recipe on the device it gets.")
    beta: float
    loss_type: str
    reference_strategy: ReferenceStrategy
    n_epochs: int
    max_steps_per_epoch: int | None = Field(description="None: every batch of every epoch.")
    batch_size: int
    gradient_accumulation_steps: int
    shuffle: bool
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    optimizer: OptimizerName
    max_seq_length: int
    pad_to_multiple_of: int | None = Field(default=None, description="Pad batches to a multiple of this length.")
    group_by_length: bool = Field(default=False, description="Batch pairs of similar length (when shuffling).")
    gradient_checkpointing: bool
    activation_offloading: bool
    logging_steps: int
    seed: int
    trust_remote_code: bool
    num_rows: int

    @property
    def path(self) -> Path:
        return Path(self.job_dir)

    def write(self) -> Path:
        target = self.path / JOB_SPEC_FILE
        target.write_text(self.model_dump_json(indent=2))
        return target

    @classmethod
    def read(cls, job_dir: str | Path) -> "DPOJobSpec":
        return cls.model_validate_json((Path(job_dir) / JOB_SPEC_FILE).read_text())
