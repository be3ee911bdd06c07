"""Fault injection against a real `llama stack run` server whose jobs run the fake recipe.

The fake recipe speaks the real recipe's protocol but starts in a fraction of a second, so these tests
can kill, restart and flood the job system cheaply. test_job_faults_real.py does the same with real TRL.
"""

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.job_store import JobStore
from llama_stack_provider_trl.jobs import JobRecord

from helpers import dpo_request, process_gone, register_rows, unique, wait_final, wait_for
from job_fixtures import FAKE_RECIPE, client_for, group_members, kill_server, launches, poll, server_for

SLOTS = 4
MAX_ROWS = 30


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    home = tmp_path_factory.mktemp("fake-server")
    server = server_for(
        home, recipe_module=FAKE_RECIPE, max_concurrent_jobs=SLOTS, cancel_grace_period_s=5, max_train_rows=MAX_ROWS
    )
    server.env["TRL_FAKE_STEP_S"] = "0.05"
    with server:
        yield server


@pytest.fixture(scope="module")
def fake_client(fake_server: StackServer) -> LlamaStackClient:
    return client_for(fake_server)


@pytest.fixture(scope="module")
def dataset_id(fake_client: LlamaStackClient, preference_rows: list[dict[str, str]]) -> str:
    return register_rows(fake_client, preference_rows)


def _submit(client: LlamaStackClient, dataset_id: str, job_uuid: str, steps: int = 3) -> None:
    client.alpha.post_training.preference_optimize(
        **dpo_request(job_uuid, "fake-org/fake-model", dataset_id, max_steps_per_epoch=steps)
    )


def test_twenty_submissions_in_a_burst_all_run_once_in_submission_order(
    fake_client: LlamaStackClient, dataset_id: str
) -> None:
    names = [unique(f"burst{i:02d}") for i in range(20)]
    start = threading.Barrier(len(names))

    def submit(name: str) -> None:
        start.wait()
        _submit(fake_client, dataset_id, name, steps=5)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(submit, names))
    finals = [wait_final(fake_client, name, timeout_s=240) for name in names]

    assert [s.status for s in finals] == ["completed"] * 20
    assert {j.job_uuid for j in fake_client.alpha.post_training.job.list()} >= set(names)
    assert all(len(launches(s.resources_allocated["job_dir"])) == 1 for s in finals)  # none run twice
    by_submission = sorted(finals, key=lambda s: s.scheduled_at)
    assert by_submission == sorted(finals, key=lambda s: s.started_at)  # launched in submission order
    # never more than max_concurrent_jobs running at once
    edges = sorted([(s.started_at, 1) for s in finals] + [(s.completed_at, -1) for s in finals])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert 1 <= peak <= SLOTS


def test_sigkill_of_the_training_process_fails_the_job_with_the_signal_and_its_log(
    fake_client: LlamaStackClient, dataset_id: str
) -> None:
    job_uuid = unique("killed")
    _submit(fake_client, dataset_id, job_uuid, steps=100_000)
    running = wait_for(fake_client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 2)
    pid = running.resources_allocated["pid"]

    os.kill(pid, signal.SIGKILL)
    status = wait_final(fake_client, job_uuid, timeout_s=30)

    resources = status.resources_allocated
    assert status.status == "failed"
    assert resources["exit_code"] == -signal.SIGKILL
    assert f"training process killed by signal SIGKILL (pid {pid}" in resources["error"]
    assert f"last lines of {resources['log_path']}" in resources["error"]
    assert "step 2/" in resources["error"]  # the job's own log output
    assert Path(resources["log_path"]).is_file() and resources["log_path"].startswith(resources["job_dir"])
    assert process_gone(pid)


def test_cancel_running_scheduled_finished_and_unknown_jobs(fake_client: LlamaStackClient, dataset_id: str) -> None:
    import llama_stack_client

    job_uuid = unique("cancel")
    _submit(fake_client, dataset_id, job_uuid, steps=100_000)
    pid = wait_for(fake_client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 1).resources_allocated[
        "pid"
    ]
    fake_client.alpha.post_training.job.cancel(job_uuid=job_uuid)
    status = wait_final(fake_client, job_uuid, timeout_s=30)

    assert status.status == "cancelled" and status.resources_allocated["exit_code"] == -signal.SIGTERM
    assert process_gone(pid) and group_members(pid) == []
    with pytest.raises(llama_stack_client.ConflictError, match="already finished with status 'cancelled'"):
        fake_client.alpha.post_training.job.cancel(job_uuid=job_uuid)
    with pytest.raises(llama_stack_client.NotFoundError):
        fake_client.alpha.post_training.job.cancel(job_uuid=unique("unknown"))


def test_an_unwritable_checkpoint_location_fails_that_job_only(
    fake_server: StackServer, fake_client: LlamaStackClient, dataset_id: str
) -> None:
    blocked, neighbour = unique("blocked"), unique("neighbour")
    _submit(fake_client, dataset_id, blocked, steps=40)
    _submit(fake_client, dataset_id, neighbour, steps=40)
    job_dir = Path(fake_server.env["TRL_OUTPUT_DIR"]) / blocked
    (job_dir / "checkpoints").write_text("a file where the checkpoint directory should go")

    failed, completed = wait_final(fake_client, blocked), wait_final(fake_client, neighbour)

    assert failed.status == "failed"
    assert f"cannot write {job_dir / 'checkpoints'}" in failed.resources_allocated["error"]
    assert "not writable" in failed.resources_allocated["error"]
    assert completed.status == "completed" and completed.checkpoints


def _finals(client: LlamaStackClient) -> dict[str, tuple]:
    jobs = client.alpha.post_training.job
    out = {}
    for job in jobs.list():
        status = jobs.status(job_uuid=job.job_uuid)
        artifacts = jobs.artifacts(job_uuid=job.job_uuid)
        out[job.job_uuid] = (status.model_dump(), artifacts.model_dump())
    return out


@pytest.mark.slow
def test_history_survives_a_restart_and_a_server_crash_fails_the_running_job(
    tmp_path: Path, preference_rows: list[dict[str, str]]
) -> None:
    server = server_for(tmp_path, recipe_module=FAKE_RECIPE, cancel_grace_period_s=5)
    with server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows)
        done, cancelled, failed = unique("done"), unique("cancelled"), unique("failed")
        _submit(client, dataset_id, done)
        _submit(client, dataset_id, cancelled, steps=100_000)
        wait_for(client, cancelled, lambda s: s.status == "in_progress")
        client.alpha.post_training.job.cancel(job_uuid=cancelled)
        _submit(client, dataset_id, failed)
        os.kill(wait_for(client, failed, lambda s: s.status == "in_progress").resources_allocated["pid"], 9)
        assert [wait_final(client, j).status for j in (done, cancelled, failed)] == ["completed", "cancelled", "failed"]
        before = _finals(client)

    with server_for(tmp_path, recipe_module=FAKE_RECIPE) as restarted:  # a clean stop, then a new server
        client = client_for(restarted)
        assert _finals(client) == before
        interrupted = unique("interrupted")
        _submit(client, dataset_id, interrupted, steps=100_000)
        pid = wait_for(client, interrupted, lambda s: (s.resources_allocated["step"] or 0) >= 1).resources_allocated[
            "pid"
        ]
        kill_server(restarted)
        poll(lambda: process_gone(pid), timeout_s=15, what="training process gone with its server")

    # Restarted once more, now with an output directory that cannot be created (a path under a regular file).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with server_for(tmp_path, recipe_module=FAKE_RECIPE, output_dir=str(blocker / "jobs")) as after_crash:
        client = client_for(after_crash)
        status = client.alpha.post_training.job.status(job_uuid=interrupted)
        assert status.status == "failed"
        assert status.resources_allocated["error"] == (
            f"the server stopped while this job was running (pid {pid}); no checkpoint to resume from"
        )
        assert {k: v for k, v in _finals(client).items() if k != interrupted} == before

        no_room = unique("no-room")
        _submit(client, dataset_id, no_room)
        status = client.alpha.post_training.job.status(job_uuid=no_room)
        assert status.status == "failed"
        assert (
            f"cannot write {blocker / 'jobs' / no_room}: the location is not writable"
            in (status.resources_allocated["error"])
        )
        assert after_crash.healthy() and not blocker.read_text()


def test_a_dataset_over_max_train_rows_is_413(fake_client: LlamaStackClient) -> None:
    import llama_stack_client

    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(MAX_ROWS + 1)]
    with pytest.raises(llama_stack_client.APIStatusError, match=f"more than {MAX_ROWS} rows") as info:
        _submit(fake_client, register_rows(fake_client, rows), unique("too-many"))
    assert info.value.status_code == 413
    assert "training_config.data_config.dataset_id" in str(info.value)


@pytest.mark.slow
def test_sigterm_stops_the_running_job_and_the_restarted_server_runs_it_again_then_the_queue(
    tmp_path: Path, preference_rows: list[dict[str, str]]
) -> None:
    stopped, waiting = unique("stopped"), unique("waiting")
    with server_for(tmp_path, recipe_module=FAKE_RECIPE) as server:  # one job at a time
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows)
        _submit(client, dataset_id, stopped, steps=100)
        _submit(client, dataset_id, waiting)
        pid = wait_for(client, stopped, lambda s: (s.resources_allocated["step"] or 0) >= 1).resources_allocated["pid"]
    # `with` stopped the server with SIGTERM: its shutdown() stopped the job and recorded why
    assert process_gone(pid) and group_members(pid) == []
    store = JobStore(tmp_path / "store" / "post_training_jobs.db")
    records = {r.job_uuid: r for r in map(JobRecord.model_validate_json, store.load_all())}
    store.close()
    assert records[stopped].status == "scheduled" and records[stopped].resume
    assert records[stopped].note.startswith("interrupted by a server shutdown; runs again from the beginning")
    assert records[waiting].status == "scheduled" and records[waiting].attempts == 0

    with server_for(tmp_path, recipe_module=FAKE_RECIPE) as restarted:
        client = client_for(restarted)
        first, second = wait_final(client, stopped), wait_final(client, waiting)

    assert (first.status, second.status) == ("completed", "completed")
    assert first.started_at < second.started_at
    assert [launch[2:] for launch in launches(first.resources_allocated["job_dir"])] == [[], ["--resume"]]
    assert len(launches(second.resources_allocated["job_dir"])) == 1
