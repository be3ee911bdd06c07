"""The SFT recipe run in-process on the tiny model: it learns (quality), and TRL's packing trains packed rows."""

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from llama_stack_provider_trl.algorithms.sft_rows import check_sft_rows
from llama_stack_provider_trl.demo.toy_data import repeat_instructions
from llama_stack_provider_trl.recipes.padding_free import enable_packed_attention

from helpers import answer_loss, events_of, final_checkpoint, greedy_answers, run_recipe

ROWS = repeat_instructions(32, seed=0)
TRAIN, HELD_OUT = ROWS[:24], ROWS[24:]


def _train_sft(tmp_path: Path, model: Path, **spec: Any) -> list[dict[str, Any]]:
    """The recipe's events for an SFT job on TRAIN, as the server would have checked the rows."""
    rows = check_sft_rows("train", TRAIN, "instruct").rows
    return run_recipe(tmp_path, model, rows, algorithm="sft", save_every_epoch=False, **spec)


def test_sft_learns_answers_it_never_saw_and_memorises_the_ones_it_did(tmp_path: Path, tiny_model: Path) -> None:
    events = _train_sft(
        tmp_path, tiny_model, n_epochs=40, batch_size=8, learning_rate=1e-2, shuffle=True, logging_steps=20
    )
    [setup] = events_of(events, "setup_done")
    assert setup["loss_on"] == "completion"
    trained = final_checkpoint(events)["path"]

    base_loss, trained_loss = answer_loss(tiny_model, HELD_OUT), answer_loss(trained, HELD_OUT)
    assert trained_loss < base_loss / 2, (base_loss, trained_loss)
    answers = greedy_answers(trained, TRAIN)
    matches = sum(answer == row["expected_answer"] for answer, row in zip(answers, TRAIN, strict=True))
    assert matches >= 0.9 * len(TRAIN), list(zip(answers, TRAIN, strict=True))


def test_packed_sft_trains_on_bins_of_rows_in_fewer_steps(tmp_path: Path, tiny_model: Path) -> None:
    events = _train_sft(tmp_path, tiny_model, padding_free=True, batch_size=2, max_seq_length=64)
    [setup] = events_of(events, "setup_done")
    assert setup["padding_free"] is True
    # 24 rows of about 15 tokens fill bins of 64 tokens: far fewer batch rows, so fewer steps, than unpacked (12)
    assert setup["steps_per_epoch"] < 12
    metrics = events_of(events, "metrics")
    assert metrics[-1]["padding_share"] == 0.0 and metrics[-1]["metrics"]["loss"] < metrics[0]["metrics"]["loss"]


def test_a_packed_batch_attends_only_within_each_sequence(tiny_model: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    sequences = [list(range(5, 17)), list(range(30, 37)), list(range(50, 71))]
    with torch.no_grad():
        alone = [model(torch.tensor([ids])).logits[0] for ids in sequences]
        enable_packed_attention(model, max_length=64)
        # TRL's padding-free collator: one row of every token, position ids restarting per sequence, cu_seq_lens
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
            [{"input_ids": s} for s in sequences]
        )
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
    assert torch.allclose(packed, torch.cat(alone), atol=1e-5)
