"""Fault injection with real TRL training: the server is SIGKILLed mid-job, restarted, and the job resumes."""

import json
from pathlib import Path

import pytest

from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint

from helpers import dpo_request, process_gone, register_rows, unique, wait_final, wait_for
from job_fixtures import client_for, kill_server, poll, server_for


@pytest.mark.slow
def test_server_killed_mid_job_takes_the_job_down_and_the_restarted_server_resumes_it(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    epochs, steps_per_epoch = 10, len(preference_rows) // 4
    job_uuid = unique("resume")
    with server_for(tmp_path) as server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows)
        client.alpha.post_training.preference_optimize(
            **dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=epochs, max_steps_per_epoch=None, lr=1e-3)
        )
        running = wait_for(client, job_uuid, lambda s: s.status == "in_progress")
        job_dir, pid = Path(running.resources_allocated["job_dir"]), running.resources_allocated["pid"]
        checkpoint = poll(lambda: last_trainer_checkpoint(job_dir), timeout_s=240, what="a Trainer checkpoint")

        kill_server(server)
        poll(lambda: process_gone(pid), timeout_s=15, what="the training process gone with its server")
        assert not server.healthy()

    with server_for(tmp_path) as restarted:
        client = client_for(restarted)
        status = wait_final(client, job_uuid, timeout_s=600)  # generous: 2 cores shared with other work

    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert resources["attempts"] == 2 and resources["pid"] != pid
    assert resources["note"].startswith(f"the server stopped while this job was running (pid {pid}); resuming from")
    assert (resources["step"], resources["total_steps"], resources["epoch"]) == (
        epochs * steps_per_epoch,
        epochs * steps_per_epoch,
        epochs,
    )
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    [resumed] = [e for e in events if e["event"] == "resuming"]
    resumed_step = int(Path(resumed["checkpoint"]).name.split("-")[1])
    assert resumed_step >= int(checkpoint.name.split("-")[1])
    after = events[events.index(resumed) :]
    first_step = next(e["step"] for e in after if e["event"] == "metrics")
    assert first_step == resumed_step + 1  # it went on from the checkpoint, not from step 1
    final = status.checkpoints[-1]
    assert final.identifier == f"{job_uuid}-final" and (Path(final.path) / "config.json").is_file()
