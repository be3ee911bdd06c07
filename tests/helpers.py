import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.algorithms import parse_job_spec
from llama_stack_provider_trl.algorithms.dpo import DPOJobSpec
from llama_stack_provider_trl.algorithms.grpo import GRPOJobSpec
from llama_stack_provider_trl.algorithms.sft import SFTJobSpec
from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, EVENTS_FILE, TENSORBOARD_DIR, TRAIN_DATA_FILE
from llama_stack_provider_trl.demo.requests import dpo_request
from llama_stack_provider_trl.recipes.dpo_training_single_device import main as dpo_main
from llama_stack_provider_trl.recipes.grpo_training_single_device import main as grpo_main
from llama_stack_provider_trl.recipes.sft_training_single_device import main as sft_main

__all__ = ["dpo_request"]

FINAL = {"completed", "failed", "cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_rows(client: LlamaStackClient, rows: list[dict[str, Any]]) -> str:
    dataset_id = unique("prefs")
    client.beta.datasets.register(
        purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
    )
    return dataset_id


def wait_for(
    client: LlamaStackClient, job_uuid: str, done: Callable[[Any], bool], timeout_s: float = 300, poll_s: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.alpha.post_training.job.status(job_uuid=job_uuid)
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_uuid} still {status.status}: {status.resources_allocated}")
        time.sleep(poll_s)


def wait_final(client: LlamaStackClient, job_uuid: str, timeout_s: float = 300) -> Any:
    return wait_for(client, job_uuid, lambda s: s.status in FINAL, timeout_s)


def tensorboard_losses(job_dir: Path) -> list[float]:
    """The training losses TensorBoard shows for the job, step by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # seconds to import

    accumulator = EventAccumulator(str(job_dir / TENSORBOARD_DIR))
    accumulator.Reload()
    return [scalar.value for scalar in accumulator.Scalars("train/loss")]


def process_gone(pid: int) -> bool:
    """True once no process with this pid exists (or only a zombie nobody will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


# A small LoRA for recipe tests (a LoraSpec, less merge_adapter)
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear", "quantize_4bit": False}


def write_job(
    job_dir: Path,
    model: str | Path,
    rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None = None,
    algorithm: str = "dpo",
    **overrides: Any,
) -> DPOJobSpec | SFTJobSpec | GRPOJobSpec:
    """A job directory as the server leaves it for the recipe: rows and job.json (small CPU defaults)."""
    job_dir.mkdir(parents=True)
    (job_dir / TRAIN_DATA_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if eval_rows:
        (job_dir / EVAL_DATA_FILE).write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    fields: dict[str, Any] = {
        "job_uuid": job_dir.name,
        "model": str(model),
        "job_dir": str(job_dir),
        "device": "cpu",
        "precision": "auto",
        "beta": 0.1,
        "loss_types": ["sigmoid"],
        "reference_strategy": "frozen_copy",
        "n_epochs": 1,
        "max_steps_per_epoch": None,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "shuffle": False,
        "learning_rate": 5e-3,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "optimizer": "adamw",
        "max_seq_length": 128,
        "gradient_checkpointing": False,
        "activation_offloading": False,
        "logging_steps": 1,
        "seed": 0,
        "trust_remote_code": False,
        "num_rows": len(rows),
        "num_eval_rows": len(eval_rows or []),
    }
    if algorithm in ("sft", "grpo"):
        for dpo_only in ("beta", "loss_types", "reference_strategy"):
            del fields[dpo_only]
    spec = parse_job_spec({**fields, "algorithm": algorithm, **overrides})
    spec.write()
    return spec


def run_recipe(
    tmp_path: Path,
    model: Path,
    rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None = None,
    algorithm: str = "dpo",
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Run the algorithm's training recipe in this process on a job directory under ``tmp_path``; return its
    events."""
    job_dir = write_job(tmp_path / "job", model, rows, eval_rows, algorithm, **overrides).path
    main = {"sft": sft_main, "grpo": grpo_main}.get(algorithm, dpo_main)
    assert main(["recipe", str(job_dir)]) == 0, (job_dir / EVENTS_FILE).read_text()
    return [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text().splitlines()]


def events_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def final_checkpoint(events: list[dict[str, Any]]) -> dict[str, Any]:
    [final] = [e for e in events_of(events, "checkpoint") if e["identifier"] == "job-final"]
    return final


# A tiny decoder shape for forward-pass tests: 2 layers, grouped-query attention as in Qwen2.5 and Llama 3
GQA_SHAPE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def padded_batch(
    lengths: list[int], padding_side: str = "right", device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (of GQA_SHAPE's vocabulary) and the attention mask of sequences of these lengths, padded."""
    width = max(lengths)
    input_ids = torch.randint(1, GQA_SHAPE["vocab_size"], (len(lengths), width), device=device)
    mask = (torch.arange(width, device=device) < torch.tensor(lengths, device=device)[:, None]).long()
    if padding_side == "left":
        mask = mask.flip(1)
    return input_ids.masked_fill(mask == 0, 0), mask


def answer_loss(model_dir: str | Path, rows: list[dict[str, str]]) -> float:
    """Mean negative log-likelihood per token of each instruct row's expected answer (and the end of turn), after
    its chat-templated question: what SFT's completion-only loss measures."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    for row in rows:
        question = [{"role": "user", "content": row["input_query"]}]
        answer = [{"role": "assistant", "content": row["expected_answer"]}]
        prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(question + answer, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        token_log_probs = log_probs.gather(1, ids[0, 1:, None])[:, 0]
        answer_log_probs = token_log_probs[len(prompt_ids) - 1 :]
        total -= answer_log_probs.sum().item()
        count += answer_log_probs.numel()
    return total / count


def greedy_answers(model_dir: str | Path, rows: list[dict[str, str]], max_new_tokens: int = 16) -> list[str]:
    """The model's greedy answer to each instruct row's question, rendered by its chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    answers = []
    for row in rows:
        question = [{"role": "user", "content": row["input_query"]}]
        prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return answers
