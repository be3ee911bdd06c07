"""Held-out preference accuracy: does a model give the chosen completion more log-probability than the rejected?

Pairs are scored the way TRL's DPOTrainer tokenizes them: the completion is every token of prompt+completion after
the tokens it shares with the prompt alone. Conversational rows go through the tokenizer's chat template (the
prompt with the generation prompt, so the completion ends with the template's end-of-turn); standard rows get
the EOS token appended to each completion.
"""

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl.data_utils import common_prefix_length, is_conversational


def pair_ids(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids as TRL's DPOTrainer builds them."""
    if is_conversational(row):
        prompt = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        full = [
            tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True, return_dict=True)["input_ids"]
            for key in ("chosen", "rejected")
        ]
        prompt_ids = prompt["input_ids"]
    else:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        eos = tokenizer.eos_token
        full = [
            tokenizer(row["prompt"] + row[key] + ("" if row[key].endswith(eos) else eos))["input_ids"]
            for key in ("chosen", "rejected")
        ]
    n = min(common_prefix_length(prompt_ids, ids) for ids in full)
    return prompt_ids[:n], full[0][n:], full[1][n:]


@torch.no_grad()
def completion_logps(
    model: torch.nn.Module, pairs: list[tuple[list[int], list[int]]], batch_size: int = 16
) -> list[float]:
    """Sum of log p(completion token | everything before it) for each (prompt_ids, completion_ids)."""
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        scored = torch.zeros(len(batch), width - 1, dtype=torch.bool)  # which next-token predictions count
        for i, (prompt, completion) in enumerate(batch):
            n = len(prompt) + len(completion)
            ids[i, :n] = torch.tensor(prompt + completion)
            mask[i, :n] = 1
            scored[i, len(prompt) - 1 : n - 1] = True
        logps = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        token_logps = logps.gather(-1, ids[:, 1:, None])[..., 0]
        out += (token_logps * scored).sum(-1).tolist()
    return out


def load_model(path: str | Path) -> torch.nn.Module:
    """A full model, or a PEFT adapter directory on top of the base model it names."""
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    return AutoModelForCausalLM.from_pretrained(path).eval()


def preference_margins(model_path: str | Path, rows: list[dict[str, Any]]) -> list[float]:
    """log p(chosen | prompt) - log p(rejected | prompt) for each row."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_model(model_path)
    ids = [pair_ids(tokenizer, row) for row in rows]
    chosen = completion_logps(model, [(prompt, c) for prompt, c, _ in ids])
    rejected = completion_logps(model, [(prompt, r) for prompt, _, r in ids])
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def greedy_answers(model_path: str | Path, prompts: list[list[dict[str, str]]], max_new_tokens: int = 24) -> list[str]:
    """The model's greedy reply to each conversational prompt."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_model(model_path)
    answers = []
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.append(" ".join(reply.split()))
    return answers
