"""Held-out preference accuracy: does a model give the chosen completion more log-probability than the rejected?"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@torch.no_grad()
def completion_logp(model: torch.nn.Module, tokenizer, prompt: str, completion: str) -> float:
    """Sum of log-probabilities of the completion's tokens after the prompt, tokenized apart as TRL does."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + completion_ids])
    logps = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return float(token_logps[len(prompt_ids) - 1 :].sum())


def preference_margins(model_path: str | Path, rows: list[dict[str, str]]) -> list[float]:
    """log p(chosen | prompt) - log p(rejected | prompt) for each row."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    return [
        completion_logp(model, tokenizer, r["prompt"], r["chosen"])
        - completion_logp(model, tokenizer, r["prompt"], r["rejected"])
        for r in rows
    ]
