"""Pause and resume in the engine, with the real recipe: a paused job saves a resumable checkpoint and its process
ends; resumed, it trains the remaining steps exactly as a job never paused. (Through OGX's API: tests_ogx.)"""

import json
import shutil
from pathlib import Path

import pytest

from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
from llama_stack_provider_trl.common.job_spec import CHECKPOINTS_DIR, EVENTS_FILE, PAUSE_REQUEST_FILE
from llama_stack_provider_trl.common.recipe_process import RESUME_FLAG
from llama_stack_provider_trl.engine.jobs import JobManager, WrongJobState
from llama_stack_provider_trl.recipes.dpo_training_single_device import main as dpo_main

from helpers import events_of, run_recipe, write_job
from job_fixtures import poll


def _losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["metrics"]["loss"] for e in events_of(events, "metrics")}


def _events(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_a_job_paused_after_its_first_step_resumes_to_the_losses_of_a_job_never_paused(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    options = {"shuffle": True, "save_every_epoch": False}  # 24 pairs, batch 4: 6 steps in a shuffled order
    never_paused = _losses(run_recipe(tmp_path / "reference", tiny_model, preference_rows, **options))

    spec = write_job(tmp_path / "jobs" / "paused", tiny_model, preference_rows, **options)
    (spec.path / PAUSE_REQUEST_FILE).touch()  # the server's request, there before the first step ends
    jobs = JobManager(max_concurrent_jobs=1, cancel_grace_period_s=5.0, poll_interval_s=0.05)
    jobs.start()
    try:
        jobs.submit(spec)
        paused = poll(lambda: (r := jobs.get(spec.job_uuid)).status == "paused" and r, 300, "paused")
        assert paused.exit_code == 0 and paused.pid is None and paused.resume
        checkpoint = last_trainer_checkpoint(spec.path)
        assert checkpoint is not None and checkpoint.name == "checkpoint-1"
        with pytest.raises(WrongJobState, match="is paused; it cannot be paused"):
            jobs.pause(spec.job_uuid)

        jobs.resume(spec.job_uuid)
        assert not (spec.path / PAUSE_REQUEST_FILE).exists()
        done = poll(lambda: (r := jobs.get(spec.job_uuid)).status not in ("scheduled", "in_progress") and r, 300)
        assert done.status == "completed", done.error
    finally:
        jobs.shutdown()

    events = _events(spec.path)
    assert [e["step"] for e in events_of(events, "paused")] == [1]
    assert [e["checkpoint"] for e in events_of(events, "resuming")] == [str(checkpoint)]
    assert _losses(events) == pytest.approx(never_paused, rel=1e-5)
    assert sorted(_losses(events)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_job_of_limited_epochs_resumed_from_an_epoch_checkpoint_trains_the_remaining_steps_of_a_job_never_stopped(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    # 3 epochs of 2 steps (of 6 batches each), shuffled: what a server killed after epoch 1 resumes from
    options = {"shuffle": True, "n_epochs": 3, "max_steps_per_epoch": 2, "save_every_epoch": True}
    whole = write_job(tmp_path / "whole", tiny_model, preference_rows, **options).path
    assert dpo_main(["recipe", str(whole)]) == 0
    stopped = write_job(tmp_path / "stopped", tiny_model, preference_rows, **options).path
    shutil.copytree(whole / CHECKPOINTS_DIR / "checkpoint-2", stopped / CHECKPOINTS_DIR / "checkpoint-2")

    assert dpo_main(["recipe", str(stopped), RESUME_FLAG]) == 0

    never_stopped = _losses(_events(whole))
    assert sorted(never_stopped) == [1, 2, 3, 4, 5, 6]
    assert _losses(_events(stopped)) == pytest.approx({s: loss for s, loss in never_stopped.items() if s > 2}, rel=1e-5)
    epochs = [e["metrics"]["epoch"] for e in events_of(_events(stopped), "metrics")]
    assert epochs == pytest.approx([1.5, 2.0, 2.5, 3.0])  # fractions of the limited epoch
