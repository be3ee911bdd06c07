"""A training request in no front door's terms: what admission checks and turns into a job spec.

A front door (the Llama Stack 0.6.1 face in ``stack_requests.py``; OGX's fine-tuning API next) fills one from
its API's request. Every value travels with the caller's name for it (``Given.field``: 0.6.1 says
``training_config.data_config.batch_size``), so each refusal names the field the caller sent. ``None`` means the
caller did not set the value, and the provider config's default applies: a front door sets only what its caller
really asked for, not what its schema fills in.

Fields are listed in the order admission checks them. A second algorithm adds its own fields beside the DPO ones.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Given[T]:
    """A value the caller sent, and the caller's name for its field."""

    value: T
    field: str


@dataclass(frozen=True, kw_only=True)
class LoraRequest:
    """SFT's LoRA as Llama Stack asks for it (LoraFinetuningConfig): attention layers in torchtune's names."""

    rank: Given[int]
    alpha: Given[float]
    attn_modules: Given[list[str]]  # q_proj, k_proj, v_proj, output_proj (or the model's own layer names)
    mlp: Given[bool]  # every linear layer of the MLP blocks too
    output: Given[bool]  # the output head (lm_head) too
    use_dora: Given[bool] | None = None
    quantize_base: Given[bool] | None = None  # QLoRA: the frozen base in 4-bit


@dataclass(frozen=True, kw_only=True)
class TrackerRequest:
    """One experiment tracker the caller asks for: 0.6.1's ``logger_config.<name>``, OGX's ``integrations[i]``."""

    name: Given[str]  # tensorboard, mlflow or wandb
    options: Given[Any]  # an object of the tracker's options; {} or true: its defaults; false or None: off


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    algorithm: str = "dpo"  # dpo, sft or grpo: which recipe trains the job
    job_uuid: Given[str]
    model: Given[str]
    # DPO
    beta: Given[float] | None = None  # None: the provider config's dpo_beta
    loss_type: Given[str] | None = None  # None: the provider config's dpo_loss_type
    # SFT
    lora: LoraRequest | None = None  # None: the provider config's LoRA settings (use_lora), else a full fine-tune
    # GRPO (reinforcement fine-tuning)
    grader: Given[dict[str, Any]] | None = None  # scores each sampled answer (llama_stack_provider_trl.graders)
    compute_multiplier: Given[float] | None = None  # scales the provider config's num_generations; None: 1
    eval_interval: Given[int] | None = None  # steps between validation runs; None: once an epoch
    eval_samples: Given[int] | None = None  # answers sampled per validation prompt; None: num_generations
    reasoning_effort: Given[str] | None = None  # for a chat template that reads it; None or default: not passed
    unsupported_algorithm: Given[str] | None = None  # an algorithm config this engine does not run (QAT)
    checkpoint_dir: Given[str] | None = None  # where to save: the engine keeps checkpoints in the job's directory
    # training loop
    n_epochs: Given[int]
    max_steps_per_epoch: Given[int] | None = None  # None: every batch of every epoch
    gradient_accumulation_steps: Given[int] | None = None  # None: 1
    # data. dataset_id holds "" when the caller gave none (its field then names what is missing)
    dataset_id: Given[str]
    batch_size: Given[int]
    shuffle: Given[bool] | None = None  # None: shuffled
    data_format: Given[str] | None = None  # instruct (strings) or dialog (messages); None: read from the rows
    validation_dataset_id: Given[str] | None = None
    packed: Given[bool] | None = None  # several pairs packed into one row: not a DPO option
    train_on_input: Given[bool] | None = None  # a loss on the prompt: not a DPO option
    # optimizer: None takes the provider config's value
    optimizer: Given[str] | None = None  # adamw, adam or sgd; None: adamw
    learning_rate: Given[float] | None = None
    weight_decay: Given[float] | None = None
    warmup_steps: Given[int] | None = None
    # memory and precision
    gradient_checkpointing: Given[bool] | None = None
    activation_offloading: Given[bool] | None = None
    fsdp: Given[bool] | None = None  # any FSDP option: this engine trains on one device
    dtype: Given[str] | None = None  # bf16, fp16 or fp32 (or their torch names); None: config mixed_precision
    # provider config fields marked PER_JOB, overridden for this job only
    overrides: Given[dict[str, Any]] = Given({}, "hyperparam_search_config")
    trackers: tuple[TrackerRequest, ...] = ()  # experiment trackers (engine/trackers.py)
