"""The recipe on a tiny model: LoRA artifacts, conversational and implicit-prompt rows, a validation set,
per-epoch checkpoints under save_total_limit, and combined losses."""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, as_conversations, with_implicit_prompt

from helpers import LORA, events_of, final_checkpoint, run_recipe


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> list[dict[str, Any]]:
    """3 epochs of 2 steps, LoRA with a merged export, conversational rows, a validation set, keep 1 epoch ckpt."""
    return run_recipe(
        tmp_path_factory.mktemp("lora"),
        tiny_model,
        as_conversations(arithmetic_preferences(16)),
        eval_rows=as_conversations(arithmetic_preferences(8, offset=100)),
        reference_strategy="adapters_disabled",
        lora={**LORA, "merge_adapter": True},
        n_epochs=3,
        max_steps_per_epoch=2,
        learning_rate=5e-2,
        save_total_limit=1,
        shuffle=True,
        group_by_length=True,
    )


def test_lora_trains_only_the_adapters(lora_run: list[dict[str, Any]]) -> None:
    [setup] = events_of(lora_run, "setup_done")
    assert 0 < setup["trainable_parameters"] < setup["parameters"] / 5
    assert lora_run[-1]["event"] == "completed"


def test_the_adapter_loads_with_peft_and_moved_from_its_zero_init(lora_run: list[dict[str, Any]]) -> None:
    adapter = final_checkpoint(lora_run)["path"]
    assert (Path(adapter) / "adapter_config.json").is_file()
    model = AutoPeftModelForCausalLM.from_pretrained(adapter)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it


def test_the_merged_model_loads_as_a_plain_model_that_differs_from_the_base(
    lora_run: list[dict[str, Any]], tiny_model: Path
) -> None:
    [merged] = [e for e in events_of(lora_run, "checkpoint") if e["identifier"] == "job-final-merged"]
    trained = AutoModelForCausalLM.from_pretrained(merged["path"])
    assert not any("lora" in name for name in trained.state_dict())
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert any(not torch.equal(p, base[n]) for n, p in trained.state_dict().items())


def test_each_epoch_is_evaluated_with_loss_and_perplexity(lora_run: list[dict[str, Any]]) -> None:
    evals = events_of(lora_run, "eval")
    assert [e["epoch"] for e in evals] == [1, 2, 3]
    for e in evals:
        assert math.isfinite(e["metrics"]["eval_loss"]) and e["metrics"]["eval_rewards/accuracies"] >= 0
        assert e["perplexity"] > 1
    assert evals[-1]["metrics"]["eval_rewards/margins"] != evals[0]["metrics"]["eval_rewards/margins"]


def test_epoch_checkpoints_carry_metrics_and_save_total_limit_prunes_older_ones_on_disk(
    lora_run: list[dict[str, Any]],
) -> None:
    checkpoints = {e["identifier"]: e for e in events_of(lora_run, "checkpoint")}
    assert list(checkpoints) == ["job-epoch-1", "job-epoch-2", "job-epoch-3", "job-final", "job-final-merged"]
    assert [checkpoints[f"job-epoch-{n}"]["step"] for n in (1, 2, 3)] == [2, 4, 6]
    assert not Path(checkpoints["job-epoch-1"]["path"]).exists()  # pruned by save_total_limit
    assert not Path(checkpoints["job-epoch-2"]["path"]).exists()
    kept = Path(checkpoints["job-epoch-3"]["path"])
    assert (kept / "adapter_config.json").is_file() and (kept / "optimizer.pt").is_file()  # resumable
    for name in ("job-epoch-3", "job-final", "job-final-merged"):
        c = checkpoints[name]
        assert c["epoch"] == 3 and c["train_loss"] is not None and c["eval_loss"] is not None and c["perplexity"] > 1
        tokenizer = AutoTokenizer.from_pretrained(c["path"])  # tokenizer and chat template beside every one
        assert tokenizer.chat_template and tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])


def test_implicit_prompt_rows_train(tmp_path: Path, tiny_model: Path) -> None:
    events = run_recipe(
        tmp_path,
        tiny_model,
        with_implicit_prompt(arithmetic_preferences(8)),
        max_steps_per_epoch=2,
        save_every_epoch=False,
    )
    assert events[-1]["event"] == "completed"
    assert [e["identifier"] for e in events_of(events, "checkpoint")] == ["job-final"]


def test_a_weighted_sft_term_adds_to_the_dpo_loss(tmp_path: Path, tiny_model: Path) -> None:
    """At the first step the policy equals its reference, so sigmoid DPO is exactly ln 2; RPO adds the NLL."""
    rows = arithmetic_preferences(8)
    first_loss = {
        name: events_of(
            run_recipe(tmp_path / name, tiny_model, rows, max_steps_per_epoch=1, save_every_epoch=False, **options),
            "metrics",
        )[0]["metrics"]["loss"]
        for name, options in {
            "dpo": {},
            "rpo": {"loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
        }.items()
    }
    assert first_loss["dpo"] == pytest.approx(math.log(2), abs=1e-3)
    assert first_loss["rpo"] > first_loss["dpo"] + 0.5
