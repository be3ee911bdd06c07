"""Pause and resume in the engine, with the real recipe: a paused job saves a resumable checkpoint and its process
ends; resumed, it trains the remaining steps exactly as a job never paused. (Through OGX's API: tests_ogx.)"""

import json
from pathlib import Path

import pytest

from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
from llama_stack_provider_trl.common.job_spec import EVENTS_FILE, PAUSE_REQUEST_FILE
from llama_stack_provider_trl.engine.jobs import JobManager, WrongJobState

from helpers import events_of, run_recipe, write_job
from job_fixtures import poll


def _losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["metrics"]["loss"] for e in events_of(events, "metrics")}


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

    events = [json.loads(line) for line in (spec.path / EVENTS_FILE).read_text().splitlines()]
    assert [e["step"] for e in events_of(events, "paused")] == [1]
    assert [e["checkpoint"] for e in events_of(events, "resuming")] == [str(checkpoint)]
    assert _losses(events) == pytest.approx(never_paused, rel=1e-5)
    assert sorted(_losses(events)) == [1, 2, 3, 4, 5, 6]
