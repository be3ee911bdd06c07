"""fp32 master weights in the optimizer: small updates add up, resuming restores them exactly, and a job runs so."""

import io
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.recipes.dpo_training_single_device import main as recipe_main
from llama_stack_provider_trl.recipes.master_weights import MASTER_WEIGHTS_KEY, with_fp32_master_weights

from helpers import events_of, final_checkpoint, run_recipe

LR = 1e-4  # one AdamW step moves a weight by about lr: far below bf16's spacing of 2^-8 just under 1.0


def _bf16_ones() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))


def _steps(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, n: int) -> None:
    for _ in range(n):
        param.grad = torch.ones_like(param)
        optimizer.step()
        param.grad = None


def test_updates_smaller_than_bf16_resolution_add_up_in_the_fp32_copies() -> None:
    plain, mastered = _bf16_ones(), _bf16_ones()
    _steps(torch.optim.AdamW([plain], lr=LR, weight_decay=0.0), plain, 40)
    optimizer = with_fp32_master_weights(torch.optim.AdamW)([mastered], lr=LR, weight_decay=0.0)
    _steps(optimizer, mastered, 40)

    assert torch.equal(plain, torch.ones_like(plain))  # stepping bf16 weights directly loses every update
    [master] = optimizer.masters
    assert master.dtype == torch.float32
    torch.testing.assert_close(master, torch.full_like(master, 1 - 40 * LR), rtol=0, atol=1e-5)
    assert torch.equal(mastered.detach(), master.to(torch.bfloat16))  # the model holds the copy, rounded
    assert mastered.dtype == torch.bfloat16


def test_param_groups_keep_their_settings() -> None:
    decayed, plain = _bf16_ones(), _bf16_ones()
    groups = [{"params": [decayed], "weight_decay": 0.1}, {"params": [plain], "weight_decay": 0.0}]
    optimizer = with_fp32_master_weights(torch.optim.AdamW)(groups, lr=LR)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(p.dtype == torch.float32 for g in optimizer.param_groups for p in g["params"])


def test_a_saved_state_restores_the_exact_fp32_weights_after_a_restart() -> None:
    cls = with_fp32_master_weights(torch.optim.AdamW)
    param = _bf16_ones()
    optimizer = cls([param], lr=LR)
    _steps(optimizer, param, 3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    expected = optimizer.masters[0].clone()

    # A restart: the model comes back from its checkpoint (bf16, rounded), the optimizer from its state file.
    restarted = torch.nn.Parameter(param.detach().clone())
    resumed = cls([restarted], lr=LR)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))

    assert not torch.equal(expected, expected.to(torch.bfloat16).float())  # the rounding would have lost something
    assert torch.equal(resumed.masters[0], expected)
    assert resumed.state_dict()["state"][0]["step"] == 3
    _steps(resumed, restarted, 1)
    _steps(optimizer, param, 1)
    assert torch.equal(resumed.masters[0], optimizer.masters[0])  # and goes on exactly as if never stopped


def test_a_bf16_job_with_master_weights_in_the_optimizer_trains_and_saves_bf16_weights(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    events = run_recipe(
        tmp_path,
        tiny_model,
        preference_rows,
        precision="bf16",
        master_weights="optimizer",
        learning_rate=1e-3,
        save_every_epoch=True,
    )
    [setup] = events_of(events, "setup_done")
    assert (setup["precision"], setup["master_weights"]) == ("bf16", "optimizer")
    losses = [m["metrics"]["loss"] for m in events_of(events, "metrics") if "loss" in m["metrics"]]
    assert len(losses) >= 2 and losses[-1] != losses[0]

    trained = AutoModelForCausalLM.from_pretrained(final_checkpoint(events)["path"])
    initial = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert trained.dtype == torch.bfloat16
    changed = [
        name
        for (name, p), (_, p0) in zip(trained.named_parameters(), initial.named_parameters(), strict=True)
        if not torch.equal(p, p0.to(p.dtype))
    ]
    assert changed, "no weight moved"
    [epoch_checkpoint] = (tmp_path / "job" / "checkpoints").glob("checkpoint-*")
    state = torch.load(epoch_checkpoint / "optimizer.pt", weights_only=False)
    assert all(m.dtype == torch.float32 for m in state[MASTER_WEIGHTS_KEY])


def test_a_job_resumed_from_its_epoch_checkpoint_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    options = dict(precision="bf16", master_weights="optimizer", learning_rate=1e-3, n_epochs=2, shuffle=True)
    events = run_recipe(tmp_path, tiny_model, preference_rows, **options)
    uninterrupted = AutoModelForCausalLM.from_pretrained(final_checkpoint(events)["path"]).state_dict()
    job_dir = tmp_path / "job"
    # As if the process died during the second epoch: only the first epoch's checkpoint is left.
    first, second = sorted((job_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(second)
    shutil.rmtree(final_checkpoint(events)["path"])
    (job_dir / EVENTS_FILE).unlink()

    assert recipe_main(["recipe", str(job_dir), "--resume"]) == 0, (job_dir / EVENTS_FILE).read_text()
    resumed_events = [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text().splitlines()]
    assert events_of(resumed_events, "resuming")[0]["checkpoint"] == str(first)
    resumed = AutoModelForCausalLM.from_pretrained(final_checkpoint(resumed_events)["path"]).state_dict()
    for name, weight in uninterrupted.items():
        assert torch.equal(resumed[name], weight), name
