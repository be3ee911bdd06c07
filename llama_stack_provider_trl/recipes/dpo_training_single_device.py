"""DPO with TRL's DPOTrainer on one device (or one rank of several): setup, train, save, cleanup.

The provider runs this file as its own OS process, one per job:

    python -m llama_stack_provider_trl.recipes.dpo_training_single_device <job_dir> [--resume]

It reads ``<job_dir>/job.json`` (a DPOJobSpec) and the rows in ``train.jsonl`` (and ``eval.jsonl``),
trains, saves an HF Trainer checkpoint at the end of every epoch (``checkpoints/checkpoint-<step>``) and
the final model (``checkpoints/final``; with LoRA the adapter, plus ``checkpoints/final-merged`` when
asked), each with its tokenizer and chat template, and reports progress as JSON lines in
``<job_dir>/events.jsonl``. Exit code 0 means completed; anything else means failed, with the reason in
the last event. ``--resume`` continues from the newest complete checkpoint, if there is one. When the server asks
for a pause (``<job_dir>/pause.request``), the recipe saves a resumable checkpoint after its current step and
exits 0 after a ``paused`` event.
``--standby`` imports everything and waits for the server to hand it a job (common/recipe_process.py).

A job of several processes runs this same file once per rank under ``accelerate launch`` (engine/launch.py):
each rank trains on its share of the global batch, only rank 0 writes events, Trainer saves checkpoints once.
"""

import gc
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from torch._dynamo.exc import TorchDynamoException
from torch.utils.data import Sampler, SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, TrainerCallback
from trl import DPOConfig, DPOTrainer

from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
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
    SetupDone,
    Started,
    TrackerFailed,
    TrainingStarted,
    TrainSummary,
)
from llama_stack_provider_trl.common.job_spec import (
    CHECKPOINTS_DIR,
    EVAL_DATA_FILE,
    EVENTS_FILE,
    PAUSE_REQUEST_FILE,
    TRAIN_DATA_FILE,
    DPOJobSpec,
    LoraSpec,
)
from llama_stack_provider_trl.common.parent_watch import die_with_parent
from llama_stack_provider_trl.common.recipe_process import RESUME_FLAG, STANDBY_FLAG, wait_for_job
from llama_stack_provider_trl.common.storage_errors import describe_write_error, is_storage_error
from llama_stack_provider_trl.recipes.layer_compile import CompileUnsupported, compile_decoder_layers
from llama_stack_provider_trl.recipes.master_weights import use_fp32_master_weights
from llama_stack_provider_trl.recipes.padding_free import (
    PaddingFreeUnsupported,
    enable_padding_free,
    flash_varlen_available,
)
from llama_stack_provider_trl.recipes.precision import resolve_auto_precision
from llama_stack_provider_trl.recipes.ranks import PROCESS_GROUP_TIMEOUT_S
from llama_stack_provider_trl.recipes.sampling import PairLengthGroupedSampler, pair_lengths
from llama_stack_provider_trl.recipes.throughput import (
    PaddingCounter,
    ThroughputMeter,
    flops_per_token,
    matmul_parameters,
    peak_flops,
    peak_memory_gib,
)
from llama_stack_provider_trl.recipes.trackers import tracker_callbacks


class DPOTrainingSingleDevice:
    """One DPO job: setup (models, data, TRL config), train, save (the final model), cleanup."""

    def __init__(self, spec: DPOJobSpec, events: EventWriter) -> None:
        self.spec = spec
        self.events = events
        self.trainer: DPOTrainer | None = None
        self.reporter: EventReportingCallback | None = None
        self.pause: PauseOnRequest | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        spec = self.spec
        precision = resolve_auto_precision(spec.device) if spec.precision == "auto" else spec.precision
        if precision == "bf16" and spec.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"{torch.cuda.get_device_name()} has no bf16 support; ask for dtype fp16 or fp32")
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        master_weights = self._master_weights(precision)
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.model, trust_remote_code=spec.trust_remote_code)
            model = self._load_policy(half, master_weights)
            # frozen_copy: a second copy scores the reference; it never trains, so it needs no fp32 master weights.
            # adapters_disabled (LoRA) and precomputed_log_probs keep no second copy (see ReferenceStrategy).
            ref_model = self._load_model(half or torch.float32) if spec.reference_strategy == "frozen_copy" else None
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"finetuned_model '{spec.model}' could not be loaded as a local model directory or a Hugging Face "
                f"Hub model: {exc}"
            ) from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        packed = self._pack(model, ref_model, precision)
        compiled_layers = self._compile(model, ref_model) if spec.torch_compile else 0

        train_dataset = _load_rows(spec, TRAIN_DATA_FILE)
        eval_dataset = _load_rows(spec, EVAL_DATA_FILE) if spec.num_eval_rows else None
        if _is_conversational(train_dataset) and tokenizer.chat_template is None:
            raise RuntimeError(
                f"the rows are conversational (lists of messages) but the tokenizer of '{spec.model}' has no chat "
                "template to render them; give prompt/chosen/rejected strings, or a model with a chat template"
            )
        steps_per_epoch, total_steps = self._step_budget(len(train_dataset))
        peak = peak_flops(spec.device, precision)
        meter = ThroughputMeter(
            flops_per_token(
                matmul_parameters(model), reference_forward=spec.reference_strategy != "precomputed_log_probs"
            ),
            peak * spec.num_processes if peak else None,  # MFU per GPU: TRL counts the tokens of every rank
        )
        self.reporter = EventReportingCallback(self.events, spec.job_uuid, total_steps, steps_per_epoch, meter)
        self.pause = PauseOnRequest(spec.path / PAUSE_REQUEST_FILE, total_steps)
        on_cuda = spec.device.startswith("cuda")

        args = DPOConfig(
            output_dir=str(spec.path / CHECKPOINTS_DIR),
            seed=spec.seed,
            beta=spec.beta,
            loss_type=spec.loss_types,
            loss_weights=spec.loss_weights,
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
            precompute_ref_log_probs=spec.reference_strategy == "precomputed_log_probs",
            gradient_checkpointing=spec.gradient_checkpointing,
            activation_offloading=spec.activation_offloading,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=spec.device == "cpu",
            train_sampling_strategy=_sampling_strategy(spec),
            logging_steps=spec.logging_steps,
            eval_strategy="epoch" if eval_dataset is not None else "no",
            save_strategy="epoch" if spec.save_every_epoch else "no",
            save_total_limit=spec.save_total_limit,
            report_to="none",  # trackers are added guarded (recipes/trackers.py)
            run_name=spec.job_uuid,  # the trackers' name for the run
            dataloader_num_workers=0,
            ddp_timeout=PROCESS_GROUP_TIMEOUT_S,
            ddp_find_unused_parameters=False,  # every trainable weight takes part in each step: skip DDP's search
            disable_tqdm=True,
        )
        self.trainer = StepLimitedDPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,  # without it TRL fetches a tokenizer from the Hub
            peft_config=_lora_config(spec.lora) if spec.lora else None,
            callbacks=[self.reporter, self.pause, *tracker_callbacks(spec, self.reporter.tracker_failed)],
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
        )
        if self.trainer.eval_dataset is not None:
            self.reporter.eval_chosen_tokens_per_row = _mean_chosen_tokens(
                self.trainer.eval_dataset, spec.max_seq_length
            )
        self.reporter.padding = PaddingCounter(self.trainer.data_collator, packed=packed)
        self.trainer.data_collator = self.reporter.padding
        if spec.optimizer == "adam":  # Trainer has no plain-Adam `optim`; Adam's weight decay is L2
            self.trainer.optimizer_cls_and_kwargs = (torch.optim.Adam, {"lr": spec.learning_rate})
        if master_weights == "optimizer":
            use_fp32_master_weights(self.trainer)
        self.events.emit(
            SetupDone(
                device=spec.device,
                world_size=self.trainer.args.world_size,
                strategy=spec.parallel_strategy,
                precision=precision,
                padding_free=packed,
                master_weights=master_weights,
                compiled_layers=compiled_layers,
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                train_rows=len(train_dataset),
                eval_rows=len(eval_dataset) if eval_dataset is not None else 0,
                parameters=sum(p.numel() for p in self.trainer.model.parameters()),
                trainable_parameters=sum(p.numel() for p in self.trainer.model.parameters() if p.requires_grad),
            )
        )

    def _pack(self, model: PreTrainedModel, ref_model: PreTrainedModel | None, precision: str) -> bool:
        """Make the models' forwards padding-free as padding_free asks; return whether they are."""
        setting = self.spec.padding_free
        if setting is False or (setting == "auto" and not flash_varlen_available(model, self.spec.device, precision)):
            return False
        try:  # the policy and its reference share one config: the policy fails its check unpatched, or both pass
            for each in (model, ref_model) if ref_model is not None else (model,):
                enable_padding_free(each, self.spec.max_seq_length)
        except PaddingFreeUnsupported as exc:
            if setting == "auto":
                return False
            raise RuntimeError(f"padding_free: {exc}; set padding_free: false (or auto) for this model") from exc
        return True

    def _compile(self, model: PreTrainedModel, ref_model: PreTrainedModel | None) -> int:
        """Compile the decoder layers of the policy and its reference copy; return the policy's compiled layers.
        A LoRA model is wrapped by TRL afterwards: compilation waits for the first call, so it sees the adapters."""
        try:
            if ref_model is not None:
                compile_decoder_layers(ref_model)
            return compile_decoder_layers(model)
        except CompileUnsupported as exc:
            raise RuntimeError(f"torch_compile: {exc}; set torch_compile: false for this model") from exc

    def _master_weights(self, precision: str) -> str | None:
        """Where a full fine-tune's fp32 weights live: 'model' (autocast over them, or plain fp32) or 'optimizer'
        (a bf16 model); None under LoRA, whose trained adapters are fp32 and whose base never changes."""
        if self.spec.lora is not None:
            return None
        if self.spec.master_weights == "optimizer" and precision == "fp16":
            raise RuntimeError(
                "master_weights: optimizer needs bf16 (fp16 weights would need loss scaling), and this job runs in "
                "fp16; set training_config.dtype to bf16 on a GPU that has it, or master_weights: model"
            )
        return "optimizer" if self.spec.master_weights == "optimizer" and precision == "bf16" else "model"

    def _load_policy(self, half: torch.dtype | None, master_weights: str | None) -> PreTrainedModel:
        lora = self.spec.lora
        if lora is None:
            if master_weights == "optimizer":  # the optimizer holds the fp32 copies: see master_weights.py
                return self._load_model(torch.bfloat16)
            # Every weight trains: fp32 master weights; bf16/fp16 run as autocast mixed precision over them.
            return self._load_model(torch.float32)
        if not lora.quantize_4bit:
            # LoRA: the base is frozen, so it can stay in half precision; peft keeps the adapters in fp32.
            return self._load_model(half if half is not None and self.spec.device != "cpu" else torch.float32)
        from transformers import BitsAndBytesConfig  # needs bitsandbytes, checked at request time

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=half or torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            self.spec.model,
            quantization_config=quantization,
            dtype=half or torch.bfloat16,
            device_map={"": torch.cuda.current_device()},
            trust_remote_code=self.spec.trust_remote_code,
        )
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.spec.gradient_checkpointing)

    def _load_model(self, dtype: torch.dtype) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(
            self.spec.model, dtype=dtype, trust_remote_code=self.spec.trust_remote_code
        )

    def _step_budget(self, num_rows: int) -> tuple[int, int]:
        """(optimizer steps per epoch, total optimizer steps), as Trainer counts them."""
        spec = self.spec
        batches = math.ceil(num_rows / spec.batch_size)
        full_epoch = max(math.ceil(batches / spec.gradient_accumulation_steps), 1)
        per_epoch = min(full_epoch, spec.max_steps_per_epoch or full_epoch)
        return per_epoch, per_epoch * spec.n_epochs

    # -- train ---------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> bool:
        """Train to the end (True), or until the server asks for a pause (False: a checkpoint is saved)."""
        assert self.trainer is not None and self.pause is not None, "call setup() first"
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
        assert self.trainer is not None and self.reporter is not None
        spec, step = self.spec, self.trainer.state.global_step
        final = spec.path / CHECKPOINTS_DIR / "final"
        # model weights (or, with LoRA, the adapter) + config + tokenizer and chat template (processing_class)
        self.trainer.save_model(str(final))
        self.reporter.emit_checkpoint(f"{spec.job_uuid}-final", final, step)
        if spec.lora is not None and spec.lora.merge_adapter and self.trainer.is_world_process_zero():
            merged = spec.path / CHECKPOINTS_DIR / "final-merged"
            self._merged_model(final).save_pretrained(merged)
            self.trainer.processing_class.save_pretrained(merged)
            self.reporter.emit_checkpoint(f"{spec.job_uuid}-final-merged", merged, step)

    def _merged_model(self, adapter_dir: Path) -> PreTrainedModel:
        assert self.trainer is not None and self.spec.lora is not None
        if not self.spec.lora.quantize_4bit:
            return self.trainer.accelerator.unwrap_model(self.trainer.model).merge_and_unload()
        # A 4-bit base cannot take the update: merge into a half-precision copy of the original weights instead
        base = self._load_model(torch.bfloat16)
        return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.trainer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class StepLimitedDPOTrainer(DPOTrainer):
    """DPOTrainer with three changes: each epoch ends after ``steps_per_epoch`` optimizer steps (the request's
    ``max_steps_per_epoch``), the learning-rate schedule spans the steps that will really run (Trainer's own count
    is the full epochs'), and length grouping batches preference pairs of similar length (PairLengthGroupedSampler)
    in training only."""

    def __init__(self, *args: Any, steps_per_epoch: int, total_steps: int, **kwargs: Any) -> None:
        self._total_steps = total_steps
        super().__init__(*args, **kwargs)
        self.add_callback(_EndEpochAfter(steps_per_epoch))

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return PairLengthGroupedSampler(pair_lengths(self.train_dataset), batch, seed=self.args.seed)

    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        return SequentialSampler(eval_dataset)  # Trainer would length-group it too, and fail on TRL's columns

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        return super().create_scheduler(self._total_steps, optimizer)


class _EndEpochAfter(TrainerCallback):
    """StepLimitedDPOTrainer's epoch limit: Trainer's loop ends an epoch only on a callback's control flag."""

    def __init__(self, steps_per_epoch: int) -> None:
        self._steps_per_epoch = steps_per_epoch

    def on_step_end(self, args, state, control, **kwargs):
        # From the step count, not a counter: a run resumed from a checkpoint starts mid-way
        if state.global_step % self._steps_per_epoch == 0:
            control.should_epoch_stop = True


class EventReportingCallback(TrainerCallback):
    """Writes progress, TRL's logged metrics, evaluations and checkpoints to the job's event file."""

    def __init__(
        self,
        events: EventWriter,
        job_uuid: str,
        total_steps: int,
        steps_per_epoch: int,
        meter: ThroughputMeter,
    ) -> None:
        self._events = events
        self._job_uuid = job_uuid
        self._meter = meter
        self.padding: PaddingCounter | None = None
        self.eval_chosen_tokens_per_row: float | None = None
        self._total_steps = total_steps
        self._steps_per_epoch = steps_per_epoch
        self._epoch = 0
        self._step = 0  # the last optimizer step done (callbacks run before the trackers'), for tracker failures
        self._epoch_losses: list[float] = []
        self.epoch_train_loss: float | None = None
        self.eval_loss: float | None = None
        self.perplexity: float | None = None

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
            self._events.emit(TrainSummary(metrics=_numbers(logs)))
            return
        if any(key.startswith("eval_") for key in logs):  # an evaluation: on_evaluate reports it
            return
        if "loss" in logs:
            self._epoch_losses.append(float(logs["loss"]))
        if "num_tokens" in logs:
            self._meter.update(state.global_step, float(logs["num_tokens"]))
        self._events.emit(
            Metrics(
                step=state.global_step,
                total_steps=self._total_steps,
                epoch=self._epoch,
                metrics=_numbers(logs),
                tokens_per_s=self._meter.tokens_per_s,
                mfu=self._meter.mfu,
                padding_share=self.padding.padding_share if self.padding else None,
            )
        )

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._epoch_losses:
            self.epoch_train_loss = sum(self._epoch_losses) / len(self._epoch_losses)
        self._events.emit(EpochEnd(epoch=self._epoch, step=state.global_step, train_loss=self.epoch_train_loss))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = _numbers(metrics or {})
        self.eval_loss = metrics.get("eval_loss")
        chosen_logps = metrics.get("eval_logps/chosen")
        if chosen_logps is not None and self.eval_chosen_tokens_per_row:
            # Per-token perplexity of the chosen answers: TRL reports their summed log-prob per row
            self.perplexity = math.exp(min(-chosen_logps / self.eval_chosen_tokens_per_row, 700.0))
        self._events.emit(
            Evaluation(epoch=self._epoch, step=state.global_step, metrics=metrics, perplexity=self.perplexity)
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
            )
        )


class PauseOnRequest(TrainerCallback):
    """Ends training after the step during which the server asked for a pause (``pause.request`` in the job's
    directory), saving a Trainer checkpoint that ``--resume`` continues from: weights, optimizer, scheduler, RNG
    and data position. A request during the last step changes nothing: the job completes."""

    def __init__(self, request_file: Path, total_steps: int) -> None:
        self._request_file = request_file
        self._total_steps = total_steps
        self.paused_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        requested = self._request_file.exists()
        if args.world_size > 1:  # every rank stops after the same step, or the others wait in their next collective
            flag = torch.tensor([float(requested)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if state.global_step < self._total_steps and requested:
            control.should_save = True
            control.should_training_stop = True
            self.paused_at = state.global_step


def _sampling_strategy(spec: DPOJobSpec) -> str:
    if not spec.shuffle:
        return "sequential"  # the dataset's own order, as asked
    return "group_by_length" if spec.group_by_length else "random"


def _lora_config(lora: LoraSpec) -> LoraConfig:
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,  # "all-linear" leaves out the output head
        bias="none",
        task_type="CAUSAL_LM",
    )


def _is_conversational(dataset: Dataset) -> bool:
    return isinstance(dataset[0]["chosen"], list)


def _mean_chosen_tokens(tokenized: Dataset, max_length: int) -> float:
    """Mean number of chosen-answer tokens TRL scores per row (prompt + answer are cut at max_length)."""
    counts = [
        max(min(len(prompt) + len(chosen), max_length) - len(prompt), 0)
        for prompt, chosen in zip(tokenized["prompt_ids"], tokenized["chosen_ids"], strict=True)
    ]
    return max(sum(counts) / len(counts), 1.0)


def _numbers(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _load_rows(spec: DPOJobSpec, name: str) -> Dataset:
    rows = Dataset.from_list(_read_jsonl(spec.path / name))
    if spec.num_processes == 1:
        return rows
    # Ranks share what TRL computes once on rank 0 (tokenized rows, precomputed reference log-probs) through cache
    # files beside the dataset's own; an in-memory dataset would put them in each process's private temp directory.
    return rows.flatten_indices(cache_file_name=str(spec.path / f"{name}.arrow"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str]) -> int:
    die_with_parent()
    if argv[1:] == [STANDBY_FLAG]:  # imports done; wait for the server to hand over a job
        job_argv = wait_for_job(argv[0])
        if job_argv is None:
            return 0
        argv = job_argv
    if len(argv) not in (2, 3) or argv[2:] not in ([], [RESUME_FLAG]):
        print(f"usage: {argv[0]} JOB_DIR [--resume] | {argv[0]} {STANDBY_FLAG}", file=sys.stderr)
        return 2
    spec = DPOJobSpec.read(argv[1])
    rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch (torchrun) for each process
    events = EventWriter(spec.path / EVENTS_FILE if rank == 0 else Path(os.devnull))
    recipe = DPOTrainingSingleDevice(spec, events)
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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
