"""What every recipe shares, whichever TRL trainer it drives, on one device or one rank of several.

A recipe (``dpo_training_single_device``, ``sft_training_single_device``) is one readable file: setup,
train, save, cleanup around its own TRL trainer. The parts here are the same for every algorithm: the
precision and where the fp32 master weights live, loading the model (LoRA, QLoRA, or an earlier job's
adapter checkpoint merged into its base), packing and compiling it, the step budget and the schedule
that spans it, the progress events, the final and merged checkpoints, and the process's main loop.
"""

import gc
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from torch._dynamo.exc import TorchDynamoException
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
)

from llama_stack_provider_trl.algorithms import read_job_spec
from llama_stack_provider_trl.common.checkpoints import (
    ADAPTER_CONFIG_FILE,
    FINAL_DIR,
    FINAL_MERGED_DIR,
    final_identifier,
    last_trainer_checkpoint,
)
from llama_stack_provider_trl.common.events import (
    CheckpointSaved,
    Completed,
    EpochEnd,
    Evaluation,
    EventWriter,
    Failed,
    Metrics,
    Paused,
    PeakMemory,
    Resuming,
    RewardStats,
    SetupDone,
    Started,
    TrackerFailed,
    TrainingStarted,
    TrainSummary,
)
from llama_stack_provider_trl.common.job_rules import master_weights_problem
from llama_stack_provider_trl.common.job_spec import (
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    PAUSE_REQUEST_FILE,
    JobSpecBase,
    LoraSpec,
)
from llama_stack_provider_trl.common.parent_watch import die_with_parent
from llama_stack_provider_trl.common.recipe_process import RESUME_FLAG, STANDBY_FLAG, THREAD_VARIABLES, wait_for_job
from llama_stack_provider_trl.common.storage_errors import describe_write_error, is_storage_error
from llama_stack_provider_trl.recipes.layer_compile import CompileUnsupported, compile_decoder_layers
from llama_stack_provider_trl.recipes.master_weights import use_fp32_master_weights
from llama_stack_provider_trl.recipes.padding_free import PaddingFreeUnsupported, flash_varlen_available
from llama_stack_provider_trl.recipes.precision import resolve_auto_precision
from llama_stack_provider_trl.recipes.ranks import PROCESS_GROUP_TIMEOUT_S
from llama_stack_provider_trl.recipes.throughput import (
    PaddingCounter,
    ThroughputMeter,
    flops_per_token,
    matmul_parameters,
    peak_flops,
    peak_memory_gib,
)
from llama_stack_provider_trl.recipes.trackers import tracker_callbacks


# -- precision ----------------------------------------------------------------------------------
def resolve_precision(spec: JobSpecBase) -> tuple[str, torch.dtype | None]:
    """(precision the job trains in, its half dtype or None for fp32), checked against the device."""
    precision = resolve_auto_precision(spec.device) if spec.precision == "auto" else spec.precision
    if precision == "bf16" and spec.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"{torch.cuda.get_device_name()} has no bf16 support; ask for dtype fp16 or fp32")
    return precision, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def master_weights_for(spec: JobSpecBase, precision: str) -> str | None:
    """Where a full fine-tune's fp32 weights live: 'model' (autocast over them, or plain fp32) or 'optimizer'
    (a bf16 model); None under LoRA, whose trained adapters are fp32 and whose base never changes."""
    if spec.lora is not None:
        return None
    problem = master_weights_problem(spec.master_weights, precision)
    if problem is not None:
        raise RuntimeError(f"master_weights: {problem}")
    return "optimizer" if spec.master_weights == "optimizer" and precision == "bf16" else "model"


# -- loading ------------------------------------------------------------------------------------
def load_tokenizer(spec: JobSpecBase) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(spec.model, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: JobSpecBase, dtype: torch.dtype) -> PreTrainedModel:
    """The model in ``spec.model``. An adapter checkpoint (an earlier LoRA job's ``final`` or epoch checkpoint)
    is merged into the base model it was trained on, so training goes on from what that job learned."""
    adapter_config = Path(spec.model) / ADAPTER_CONFIG_FILE
    if not adapter_config.is_file():
        return AutoModelForCausalLM.from_pretrained(spec.model, dtype=dtype, trust_remote_code=spec.trust_remote_code)
    base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_name, dtype=dtype, trust_remote_code=spec.trust_remote_code)
    merged = PeftModel.from_pretrained(base, spec.model).merge_and_unload()
    return merged.requires_grad_(True)  # peft loaded the base frozen; as a starting point every weight may train


def load_policy(spec: JobSpecBase, half: torch.dtype | None, master_weights: str | None) -> PreTrainedModel:
    """The model that trains, in the dtype its weights need."""
    lora = spec.lora
    if lora is None:
        if master_weights == "optimizer":  # the optimizer holds the fp32 copies: see master_weights.py
            return load_model(spec, torch.bfloat16)
        # Every weight trains: fp32 master weights; bf16/fp16 run as autocast mixed precision over them.
        return load_model(spec, torch.float32)
    if not lora.quantize_4bit:
        # LoRA: the base is frozen, so it can stay in half precision; peft keeps the adapters in fp32.
        return load_model(spec, half if half is not None and spec.device != "cpu" else torch.float32)
    from transformers import BitsAndBytesConfig  # needs bitsandbytes, checked at request time

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=half or torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        spec.model,
        quantization_config=quantization,
        dtype=half or torch.bfloat16,
        device_map={"": torch.cuda.current_device()},
        trust_remote_code=spec.trust_remote_code,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)


def load_models(
    spec: JobSpecBase, field: str, frozen_copy: bool = False
) -> tuple[str, str | None, PreTrainedTokenizerBase, list[PreTrainedModel]]:
    """(precision, master weights, tokenizer, [policy] or with ``frozen_copy`` [policy, a frozen copy of it]).
    ``field``: the request's name for the model, for the error when it cannot be loaded."""
    precision, half = resolve_precision(spec)
    master_weights = master_weights_for(spec, precision)
    try:
        tokenizer = load_tokenizer(spec)
        models = [load_policy(spec, half, master_weights)]
        if frozen_copy:  # it never trains, so it needs no fp32 master weights
            models.append(load_model(spec, half or torch.float32))
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"{field} '{spec.model}' could not be loaded as a local model directory or a Hugging Face Hub model: {exc}"
        ) from exc
    return precision, master_weights, tokenizer, models


def lora_config(lora: LoraSpec) -> LoraConfig:
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,  # "all-linear" leaves out the output head
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def compile_models(models: Sequence[PreTrainedModel]) -> int:
    """Compile the decoder layers of every model; return the first's (the policy's) compiled layers. A LoRA model
    is wrapped by TRL afterwards: compilation waits for the first call, so it sees the adapters."""
    try:
        counts = [compile_decoder_layers(model) for model in reversed(models)]
    except CompileUnsupported as exc:
        raise RuntimeError(f"torch_compile: {exc}; set torch_compile: false for this model") from exc
    return counts[-1]


# -- the trainer ---------------------------------------------------------------------------------
def step_budget(spec: JobSpecBase, num_rows: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps), as Trainer counts them for ``num_rows`` batch rows."""
    batches = math.ceil(num_rows / spec.batch_size)
    full_epoch = max(math.ceil(batches / spec.gradient_accumulation_steps), 1)
    per_epoch = min(full_epoch, spec.max_steps_per_epoch or full_epoch)
    return per_epoch, per_epoch * spec.n_epochs


class StepLimited:
    """Trainer mixin: each epoch is ``steps_per_epoch`` optimizer steps (the request's ``max_steps_per_epoch``), the
    first batches of that epoch's order. Trainer is told so where it counts an epoch, so everything it derives from
    that count holds: the learning-rate schedule spans the steps that run, logged epochs are fractions of the
    limited epoch, and a run resumed from a checkpoint continues at the right epoch and batch."""

    _steps_per_epoch: int | None = None

    def limit_steps(self, steps_per_epoch: int) -> None:
        """Called before training; a packed dataset's row count is known only once the trainer has packed it."""
        self._steps_per_epoch = steps_per_epoch

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple[int, ...]:
        """Trainer's counts of the run, (epochs, steps per epoch, examples, samples, global batch, batches per epoch,
        max steps), with an epoch of ``steps_per_epoch`` steps."""
        counts = super().set_initial_training_values(args, dataloader)  # type: ignore[misc]
        epochs, per_epoch, examples, _, batch, _, _ = counts
        if self._steps_per_epoch is None or self._steps_per_epoch >= per_epoch:
            return counts
        per_epoch = self._steps_per_epoch
        batches_per_epoch = per_epoch * args.gradient_accumulation_steps  # of this process's dataloader
        return epochs, per_epoch, examples, per_epoch * batch * epochs, batch, batches_per_epoch, per_epoch * epochs


def trainer_args(spec: JobSpecBase, precision: str, packed: bool, evaluates: bool) -> dict[str, Any]:
    """The TRL config arguments every algorithm sets the same way from its job spec."""
    on_cuda = spec.device.startswith("cuda")
    return dict(
        output_dir=str(spec.path / CHECKPOINTS_DIR),
        seed=spec.seed,
        num_train_epochs=spec.n_epochs,
        per_device_train_batch_size=spec.batch_size // spec.num_processes,
        per_device_eval_batch_size=spec.batch_size // spec.num_processes,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        optim="sgd" if spec.optimizer == "sgd" else ("adamw_torch_fused" if on_cuda else "adamw_torch"),
        max_length=spec.max_seq_length,
        pad_to_multiple_of=None if packed else spec.pad_to_multiple_of,  # packed batches compute no padding
        gradient_checkpointing=spec.gradient_checkpointing,
        activation_offloading=spec.activation_offloading,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=spec.device == "cpu",
        train_sampling_strategy=_sampling_strategy(spec),
        logging_steps=spec.logging_steps,
        eval_strategy="epoch" if evaluates else "no",
        save_strategy="epoch" if spec.save_every_epoch else "no",
        save_total_limit=spec.save_total_limit,
        report_to="none",  # trackers are added guarded (recipes/trackers.py)
        run_name=spec.job_uuid,  # the trackers' name for the run
        dataloader_num_workers=0,
        ddp_timeout=PROCESS_GROUP_TIMEOUT_S,
        ddp_find_unused_parameters=False,  # every trainable weight takes part in each step: skip DDP's search
        disable_tqdm=True,
    )


def pack_models(
    spec: JobSpecBase,
    models: Sequence[PreTrainedModel],
    precision: str,
    enable: Callable[[PreTrainedModel, int], None],
    what: str,
    fix: str,
) -> bool:
    """Run the models packed as padding_free asks (``enable`` makes one packed); return whether they are."""
    setting = spec.padding_free
    if setting is False or (setting == "auto" and not flash_varlen_available(models[0], spec.device, precision)):
        return False
    try:  # the policy and its reference share one config: the policy fails its check unpatched, or both pass
        for model in models:
            enable(model, spec.max_seq_length)
    except PaddingFreeUnsupported as exc:
        if setting == "auto":
            return False
        raise RuntimeError(f"{what}: {exc}; {fix} for this model") from exc
    return True


def _rank_prefix(trainer: Trainer) -> str:
    return f"rank {trainer.args.process_index}: " if trainer.args.world_size > 1 else ""


def _cpu_threads_line(threads: int) -> str:
    """How many CPU threads torch runs, and the variables that set it."""
    given = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    return f"{threads} CPU thread{'s' if threads != 1 else ''} ({', '.join(given) or 'torch default'})"


def _sampling_strategy(spec: JobSpecBase) -> str:
    if not spec.shuffle:
        return "sequential"  # the dataset's own order, as asked
    return "group_by_length" if spec.group_by_length else "random"


# -- progress ------------------------------------------------------------------------------------
class EventReportingCallback(TrainerCallback):
    """Writes progress, TRL's logged metrics, evaluations and checkpoints to the job's event file. ``perplexity``
    turns an evaluation's metrics into the validation perplexity (or None); ``set_budget`` gives the step counts
    before training starts."""

    def __init__(
        self,
        events: EventWriter,
        job_uuid: str,
        meter: ThroughputMeter,
        perplexity: Callable[[dict[str, float]], float | None],
    ) -> None:
        self._events = events
        self._job_uuid = job_uuid
        self._meter = meter
        self._perplexity = perplexity
        self.padding: PaddingCounter | None = None
        self._total_steps = 0
        self._steps_per_epoch = 1
        self._epoch = 0
        self._step = 0  # the last optimizer step done (callbacks run before the trackers'), for tracker failures
        self._epoch_losses: list[float] = []
        self.epoch_train_loss: float | None = None
        self.eval_loss: float | None = None
        self.perplexity: float | None = None
        self.reward: float | None = None  # reinforcement jobs: the last step's mean reward
        self.eval_reward: float | None = None

    def set_budget(self, steps_per_epoch: int, total_steps: int) -> None:
        self._steps_per_epoch, self._total_steps = steps_per_epoch, total_steps

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        self._events.emit(TrainingStarted(optimizer=type(inner).__name__, step=state.global_step))

    def on_epoch_begin(self, args, state, control, **kwargs):
        # From the step count, not a counter: a run resumed from a checkpoint starts mid-way
        self._epoch = state.global_step // self._steps_per_epoch + 1
        self._epoch_losses = []

    def on_step_end(self, args, state, control, **kwargs):
        self._step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "train_runtime" in logs:  # Trainer's end-of-training summary, not a step's metrics
            self._events.emit(TrainSummary(metrics=numbers(logs)))
            return
        if any(key.startswith("eval_") for key in logs):  # an evaluation: on_evaluate reports it
            return
        if "loss" in logs:
            self._epoch_losses.append(float(logs["loss"]))
        if "num_tokens" in logs:
            self._meter.update(state.global_step, float(logs["num_tokens"]))
        reward = reward_stats(logs)
        if reward is not None:
            self.reward = reward.mean
        self._events.emit(
            Metrics(
                step=state.global_step,
                total_steps=self._total_steps,
                epoch=self._epoch,
                metrics=numbers(logs),
                tokens_per_s=self._meter.tokens_per_s,
                mfu=self._meter.mfu,
                padding_share=self.padding.padding_share if self.padding else None,
                reward=reward,
            )
        )

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._epoch_losses:
            self.epoch_train_loss = sum(self._epoch_losses) / len(self._epoch_losses)
        self._events.emit(EpochEnd(epoch=self._epoch, step=state.global_step, train_loss=self.epoch_train_loss))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = numbers(metrics or {})
        self.eval_loss = metrics.get("eval_loss")
        self.perplexity = self._perplexity(metrics)
        self.eval_reward = metrics.get("eval_reward", self.eval_reward)
        self._events.emit(
            Evaluation(
                epoch=self._epoch,
                step=state.global_step,
                metrics=metrics,
                perplexity=self.perplexity,
                reward=metrics.get("eval_reward"),
            )
        )

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        epoch_end = state.global_step % self._steps_per_epoch == 0
        name = f"epoch-{self._epoch}" if epoch_end else f"step-{state.global_step}"  # mid-epoch: a pause's
        self.emit_checkpoint(f"{self._job_uuid}-{name}", path, state.global_step)

    def tracker_failed(self, tracker: str, error: str) -> None:
        self._events.emit(TrackerFailed(tracker=tracker, error=error, step=self._step))

    def emit_checkpoint(self, identifier: str, path: Path, step: int) -> None:
        self._events.emit(
            CheckpointSaved(
                identifier=identifier,
                epoch=self._epoch,
                step=step,
                path=str(path),
                train_loss=self.epoch_train_loss,
                eval_loss=self.eval_loss,
                perplexity=self.perplexity,
                reward=self.reward,
                eval_reward=self.eval_reward,
            )
        )


def reward_stats(logs: dict[str, Any]) -> RewardStats | None:
    """A reinforcement step's rewards from TRL's logged names (GRPOTrainer's ``reward``, ``reward_std``, ``kl``,
    ``completions/*``); each named sub-grader's mean is logged as ``grader/<name>/mean``. None for other steps."""
    if not isinstance(logs.get("reward"), int | float):
        return None

    def number(key: str) -> float | None:
        value = logs.get(key)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    return RewardStats(
        mean=float(logs["reward"]),
        std=number("reward_std"),
        sub_rewards={
            key.removeprefix("grader/").removesuffix("/mean"): float(value)
            for key, value in logs.items()
            if key.startswith("grader/") and key.endswith("/mean") and isinstance(value, int | float)
        },
        kl=number("kl"),
        completion_length=number("completions/mean_length"),
        clipped_ratio=number("completions/clipped_ratio"),
    )


class PauseOnRequest(TrainerCallback):
    """Ends training after the step during which the server asked for a pause (``pause.request`` in the job's
    directory), saving a Trainer checkpoint that ``--resume`` continues from: weights, optimizer, scheduler, RNG
    and data position. A request during the last step changes nothing: the job completes."""

    def __init__(self, request_file: Path) -> None:
        self._request_file = request_file
        self.total_steps = 0  # set with the step budget, before training
        self.paused_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        requested = self._request_file.exists()
        if args.world_size > 1:  # every rank stops after the same step, or the others wait in their next collective
            flag = torch.tensor([float(requested)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if state.global_step < self.total_steps and requested:
            control.should_save = True
            control.should_training_stop = True
            self.paused_at = state.global_step


def bounded_exp(nats: float) -> float:
    return math.exp(min(nats, 700.0))  # a diverged run reports a huge perplexity, not an overflow


def numbers(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def rows_dataset(spec: JobSpecBase, name: str, rows: list[dict[str, Any]] | None = None) -> Dataset:
    """The rows of ``name`` in the job's directory (or ``rows`` made from them) as a Dataset."""
    dataset = Dataset.from_list(read_jsonl(spec.path / name) if rows is None else rows)
    if spec.num_processes == 1:
        return dataset
    # Ranks share what TRL computes once on rank 0 (tokenized rows, precomputed reference log-probs) through cache
    # files beside the dataset's own; an in-memory dataset would put them in each process's private temp directory.
    return dataset.flatten_indices(cache_file_name=str(spec.path / f"{name}.arrow"))


def throughput_meter(
    spec: JobSpecBase, model: PreTrainedModel, precision: str, reference_forward: bool
) -> ThroughputMeter:
    peak = peak_flops(spec.device, precision)
    return ThroughputMeter(
        flops_per_token(matmul_parameters(model), reference_forward=reference_forward),
        peak * spec.num_processes if peak else None,  # MFU per GPU: TRL counts the tokens of every rank
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- save ----------------------------------------------------------------------------------------
def _merged_model(trainer: Trainer, spec: JobSpecBase, adapter_dir: Path) -> PreTrainedModel:
    assert spec.lora is not None
    if not spec.lora.quantize_4bit:
        return trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    # A 4-bit base cannot take the update: merge into a half-precision copy of the original weights instead
    base = load_model(spec, torch.bfloat16)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


# -- the process ---------------------------------------------------------------------------------
class SingleDeviceRecipe:
    """A job's recipe: ``setup`` (each algorithm's own: models, data, its TRL trainer and callback), then the same
    train, save and cleanup for every algorithm."""

    def __init__(self, spec: Any, events: EventWriter) -> None:
        self.spec = spec
        self.events = events
        self.trainer: Trainer | None = None
        self.reporter: EventReportingCallback | None = None
        self.pause = PauseOnRequest(spec.path / PAUSE_REQUEST_FILE)

    def setup(self) -> None:
        raise NotImplementedError

    def callbacks(self) -> list[TrainerCallback]:
        """The trainer's callbacks: events, pause on request, and the job's experiment trackers (guarded)."""
        assert self.reporter is not None
        return [self.reporter, self.pause, *tracker_callbacks(self.spec, self.reporter.tracker_failed)]

    def report_progress(
        self,
        model: PreTrainedModel,
        precision: str,
        reference_forward: bool,
        perplexity: Callable[[dict[str, float]], float | None],
    ) -> None:
        """The callback that writes the job's progress events, with the throughput of ``model``'s steps."""
        meter = throughput_meter(self.spec, model, precision, reference_forward)
        self.reporter = EventReportingCallback(self.events, self.spec.job_uuid, meter, perplexity)

    def build_trainer(
        self, trainer_class: Callable[..., Trainer], tokenizer: PreTrainedTokenizerBase, **kwargs: Any
    ) -> None:
        """The algorithm's TRL trainer, with what every recipe gives it: the tokenizer, LoRA and the callbacks."""
        self.trainer = trainer_class(
            processing_class=tokenizer,  # without it TRL fetches a tokenizer from the Hub
            peft_config=lora_config(self.spec.lora) if self.spec.lora else None,
            callbacks=self.callbacks(),
            **kwargs,
        )

    def finish_setup(
        self,
        steps_per_epoch: int,
        total_steps: int,
        packed: bool,
        master_weights: str | None,
        train_rows: Sized,
        eval_rows: Sized | None,
        **resolved: Any,
    ) -> None:
        """Give the trainer and its callbacks the step budget (once the trainer has its rows, packed or not), count
        each batch's padding, set the optimizer up, and report what the recipe resolved (SetupDone)."""
        trainer, reporter, spec = self.trainer, self.reporter, self.spec
        assert isinstance(trainer, StepLimited) and isinstance(trainer, Trainer) and reporter is not None
        trainer.limit_steps(steps_per_epoch)
        reporter.set_budget(steps_per_epoch, total_steps)
        self.pause.total_steps = total_steps
        reporter.padding = PaddingCounter(trainer.data_collator, packed=packed)
        trainer.data_collator = reporter.padding
        if spec.optimizer == "adam":  # Trainer has no plain-Adam `optim`; Adam's weight decay is L2
            trainer.optimizer_cls_and_kwargs = (torch.optim.Adam, {"lr": spec.learning_rate})
        if master_weights == "optimizer":
            use_fp32_master_weights(trainer)
        cpu_threads = torch.get_num_threads()  # as the server's OMP_NUM_THREADS set it (engine/cpu_threads.py)
        print(f"{_rank_prefix(trainer)}training on {spec.device} with {_cpu_threads_line(cpu_threads)}", flush=True)
        self.events.emit(
            SetupDone(
                device=spec.device,
                cpu_threads=cpu_threads,
                world_size=trainer.args.world_size,
                strategy=spec.parallel_strategy,
                padding_free=packed,
                master_weights=master_weights,
                parameters=sum(p.numel() for p in trainer.model.parameters()),
                trainable_parameters=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                train_rows=len(train_rows),
                eval_rows=len(eval_rows) if eval_rows is not None else 0,
                **resolved,
            )
        )

    # -- train ---------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> bool:
        """Train to the end (True), or until the server asks for a pause (False: a checkpoint is saved)."""
        assert self.trainer is not None, "call setup() first"
        if resume_from is not None:
            self.events.emit(Resuming(checkpoint=str(resume_from)))
        self.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        accelerator = self.trainer.accelerator
        peaks = accelerator.gather(torch.tensor([peak_memory_gib(self.spec.device)], device=accelerator.device))
        self.events.emit(PeakMemory(gib=float(peaks.max()), per_rank=peaks.tolist()))
        if self.pause.paused_at is not None:
            self.events.emit(Paused(step=self.pause.paused_at))
            return False
        return True

    # -- save ----------------------------------------------------------------------------------
    def save(self) -> None:
        """``checkpoints/final`` (the model, or with LoRA the adapter) and, when asked, ``checkpoints/final-merged``
        (base + adapter as one model), each with the tokenizer and its chat template."""
        trainer, spec, reporter = self.trainer, self.spec, self.reporter
        assert trainer is not None and reporter is not None
        step = trainer.state.global_step
        final = spec.path / CHECKPOINTS_DIR / FINAL_DIR
        trainer.save_model(str(final))
        reporter.emit_checkpoint(final_identifier(spec.job_uuid, FINAL_DIR), final, step)
        if spec.lora is not None and spec.lora.merge_adapter and trainer.is_world_process_zero():
            merged = spec.path / CHECKPOINTS_DIR / FINAL_MERGED_DIR
            _merged_model(trainer, spec, final).save_pretrained(merged)
            trainer.processing_class.save_pretrained(merged)
            reporter.emit_checkpoint(final_identifier(spec.job_uuid, FINAL_MERGED_DIR), merged, step)

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.trainer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_recipe(argv: list[str], make_recipe: Callable[[Any, EventWriter], SingleDeviceRecipe]) -> int:
    """A recipe process: ``<job_dir> [--resume]``, or ``--standby`` to wait for the server's job. Exit code 0 means
    completed, or paused as the server asked (a ``paused`` event); anything else failed, with the reason in the last
    event."""
    die_with_parent()
    if argv[1:] == [STANDBY_FLAG]:  # imports done; wait for the server to hand over a job
        job_argv = wait_for_job(argv[0])
        if job_argv is None:
            return 0
        argv = job_argv
    if len(argv) not in (2, 3) or argv[2:] not in ([], [RESUME_FLAG]):
        print(f"usage: {argv[0]} JOB_DIR [--resume] | {argv[0]} {STANDBY_FLAG}", file=sys.stderr)
        return 2
    spec = read_job_spec(argv[1])
    rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch (torchrun) for each process
    events = EventWriter(spec.path / EVENTS_FILE if rank == 0 else Path(os.devnull))
    recipe = make_recipe(spec, events)
    try:
        events.emit(Started())
        recipe.setup()
        if recipe.train(last_trainer_checkpoint(spec.path) if RESUME_FLAG in argv else None):
            recipe.save()
            events.emit(Completed())
        return 0
    except Exception as exc:  # report any failure to the server, then exit non-zero
        traceback.print_exc()
        if is_storage_error(exc):  # a checkpoint or the final model could not be written: say why in words
            error = f"saving failed: {describe_write_error(getattr(exc, 'filename', None) or spec.path, exc)}"
        elif spec.torch_compile and isinstance(exc, TorchDynamoException):
            error = f"torch_compile failed ({type(exc).__name__}: {exc}); set torch_compile: false for this job"
        else:
            error = f"{type(exc).__name__}: {exc}"
        events.emit(Failed(error=error))
        return 1
    finally:
        recipe.cleanup()
        events.close()
