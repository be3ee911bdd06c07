"""The training recipe run in-process on a tiny model: strategies, optimizers and step accounting."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.recipes.dpo_training_single_device import main as recipe_main

from helpers import events_of, final_checkpoint, run_recipe, write_job


def _weights_changed(checkpoint: str, base: Path) -> bool:
    trained = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    return any(
        not torch.equal(p, trained[n]) for n, p in AutoModelForCausalLM.from_pretrained(base).state_dict().items()
    )


def test_full_epochs_when_no_step_limit_and_auto_precision_is_fp32_on_cpu(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    events = run_recipe(tmp_path, tiny_model, preference_rows, n_epochs=2, batch_size=4, gradient_accumulation_steps=2)
    [setup] = events_of(events, "setup_done")
    assert setup["precision"] == "fp32"
    # 24 rows / batch 4 = 6 batches; 2 batches per optimizer step = 3 steps per epoch
    assert (setup["steps_per_epoch"], setup["total_steps"]) == (3, 6)
    assert [e["step"] for e in events_of(events, "epoch_end")] == [3, 6]
    assert events[-1]["event"] == "completed"


def test_precomputed_reference_log_probs_train_without_a_second_model(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    events = run_recipe(tmp_path, tiny_model, preference_rows, reference_strategy="precomputed_log_probs")
    metrics = events_of(events, "metrics")
    assert metrics[-1]["metrics"]["rewards/margins"] > 0
    assert _weights_changed(final_checkpoint(events)["path"], tiny_model)


@pytest.mark.parametrize(("optimizer", "torch_class"), [("adam", "Adam"), ("sgd", "SGD"), ("adamw", "AdamW")])
def test_each_request_optimizer_trains(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]], optimizer: str, torch_class: str
) -> None:
    events = run_recipe(
        tmp_path, tiny_model, preference_rows, optimizer=optimizer, learning_rate=1e-2, max_steps_per_epoch=2
    )
    assert events_of(events, "training_started")[0]["optimizer"] == torch_class
    assert events_of(events, "setup_done")[0]["total_steps"] == 2
    assert _weights_changed(final_checkpoint(events)["path"], tiny_model)


def test_a_recipe_failure_is_reported_as_an_event_and_a_nonzero_exit(
    tmp_path: Path, preference_rows: list[dict[str, str]]
) -> None:
    job_dir = write_job(tmp_path / "job", tmp_path / "missing-model", preference_rows).path
    assert recipe_main(["recipe", str(job_dir)]) == 1
    [failed] = events_of([json.loads(x) for x in (job_dir / EVENTS_FILE).read_text().splitlines()], "failed")
    assert "missing-model" in failed["error"]


def test_length_grouping_cuts_padding_and_padding_to_a_multiple_adds_it(tmp_path: Path, tiny_model: Path) -> None:
    rows = [
        {"prompt": "What is " + "one plus " * (i % 12) + "one?", "chosen": " two" * (1 + i % 7), "rejected": " no"}
        for i in range(48)
    ]
    runs = {
        name: events_of(run_recipe(tmp_path / name, tiny_model, rows, shuffle=True, **options), "metrics")[-1]
        for name, options in {
            "random": {"group_by_length": False},
            "grouped": {"group_by_length": True},
            "padded": {"group_by_length": True, "pad_to_multiple_of": 64},
        }.items()
    }
    assert runs["grouped"]["padding_share"] < runs["random"]["padding_share"]
    assert runs["padded"]["padding_share"] > runs["grouped"]["padding_share"]
    assert all(run["tokens_per_s"] > 0 for run in runs.values())
