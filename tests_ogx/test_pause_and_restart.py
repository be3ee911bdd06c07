"""Pause, resume and cancel of a running job, and a server killed mid-job, through the openai client on `ogx run`."""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import client_for, ogx_server
from helpers import dpo, openai_preferences, step_losses, upload, wait_final, wait_for


def _poll(condition: Callable[[], Any], timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)
    return result


def _training_processes(server: StackServer, job_id: str) -> list[int]:
    """Live processes started for this job (the recipe runs with the job's directory on its command line)."""
    job_dir = f"{server.env['TRL_OGX_DIR']}/jobs/{job_id}".encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if job_dir in cmdline.read_bytes() and not _zombie(cmdline.parent):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _zombie(proc: Path) -> bool:
    return (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z")


def _messages(client: openai.OpenAI, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=1000)]


@pytest.mark.slow
def test_pause_saves_a_checkpoint_and_stops_the_process_and_resume_trains_on_from_it(
    client: openai.OpenAI, server: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    long_job = dpo(batch_size=4, n_epochs=200, learning_rate_multiplier=1)  # 600 steps: still training when paused
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, openai_preferences(preference_rows)),
        method=long_job,
        extra_body={"trl": {"save_every_epoch": False}},
    )
    _poll(lambda: step_losses(client, job.id))
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.estimated_finish and running.estimated_finish > running.created_at
    assert client.fine_tuning.jobs.pause(job.id).id == job.id
    paused = wait_for(client, job.id, lambda j: j.status == "paused")
    assert paused.finished_at is None and paused.fine_tuned_model is None
    [paused_at] = [m for m in _messages(client, job.id) if m.startswith("Fine-tuning job paused after step")]
    step = int(paused_at.rsplit(" ", 1)[1])
    [checkpoint] = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoint.step_number == step and checkpoint.fine_tuned_model_checkpoint.endswith(f":ckpt-step-{step}")
    assert _training_processes(server, job.id) == []
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)

    assert client.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    _poll(lambda: max(step_losses(client, job.id)) > step)
    assert f"Resuming from checkpoint checkpoint-{step}" in _messages(client, job.id)
    assert min(s for s in step_losses(client, job.id) if s > step) == step + 1  # on from the next step, not step 1

    client.fine_tuning.jobs.cancel(job.id)
    assert wait_final(client, job.id).status == "cancelled"
    _poll(lambda: _training_processes(server, job.id) == [], timeout_s=30)


@pytest.mark.slow
def test_a_server_killed_mid_job_resumes_it_from_its_last_checkpoint_after_a_restart(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    home = tmp_path / "home"
    with ogx_server(home) as first:
        client = client_for(first)
        job = client.fine_tuning.jobs.create(
            model=str(tiny_model),
            training_file=upload(client, openai_preferences(preference_rows)),
            method=dpo(batch_size=4, n_epochs=6),  # 3 steps an epoch, a checkpoint at each epoch's end
            metadata={"run": "restart"},
        )
        _poll(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data)
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)  # a crash: no shutdown runs
        first.process.wait()

    with ogx_server(home) as second:
        client = client_for(second)
        again = client.fine_tuning.jobs.retrieve(job.id)
        assert (again.created_at, again.metadata, again.training_file) == (
            job.created_at,
            job.metadata,
            job.training_file,
        )
        done = wait_final(client, job.id)
        assert done.status == "succeeded" and done.fine_tuned_model is not None
        assert any(m.startswith("Resuming from checkpoint checkpoint-") for m in _messages(client, job.id))
        assert max(step_losses(client, job.id)) == 18
        assert [j.id for j in client.fine_tuning.jobs.list(metadata={"run": "restart"})] == [job.id]
