"""Fault injection against a real `llama stack run` server running real TRL jobs on the tiny model.

A burst of submissions, kill -9 of a training process, cancel mid-step, an unwritable checkpoint location,
a restart that keeps the history, a server SIGKILL that takes its job down, and a SIGTERM shutdown.
Each job process spends most of its life importing torch/TRL, so these jobs train only a few steps.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import llama_stack_client
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.engine.cpu_threads import threads_per_process, usable_cores
from llama_stack_provider_trl.engine.job_record import JobRecord
from llama_stack_provider_trl.engine.job_store import JobStore

from helpers import dpo_request, process_gone, register_rows, unique, wait_final, wait_for
from job_fixtures import client_for, group_members, kill_server, poll, recipe_starts, server_for

SLOTS = 4
MAX_ROWS = 30
# Long enough to still be training whenever a test interrupts it: 24 rows / batch 4 = 6 steps an epoch.
LONG_EPOCHS = 2_000


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    home = tmp_path_factory.mktemp("fault-server")
    with server_for(home, max_concurrent_jobs=SLOTS, cancel_grace_period_s=5, max_train_rows=MAX_ROWS) as server:
        yield server


@pytest.fixture(scope="module")
def fault_client(fault_server: StackServer) -> LlamaStackClient:
    return client_for(fault_server)


@pytest.fixture(scope="module")
def dataset_id(fault_client: LlamaStackClient, preference_rows: list[dict[str, str]]) -> str:
    return register_rows(fault_client, preference_rows)


def _submit(client: LlamaStackClient, model: Path, dataset_id: str, job_uuid: str, long: bool = False) -> None:
    """A job of one step, or (long) one that trains until it is interrupted."""
    options: dict[str, Any] = {"n_epochs": LONG_EPOCHS, "max_steps_per_epoch": None} if long else {}
    client.alpha.post_training.preference_optimize(
        **dpo_request(
            job_uuid,
            model,
            dataset_id,
            **{"max_steps_per_epoch": 1, **options},
            hyperparam_search_config={"save_every_epoch": False},
        )
    )


def _training(client: LlamaStackClient, job_uuid: str, step: int = 1) -> int:
    """Wait until the job has done ``step`` optimizer steps; return its training process's pid."""
    status = wait_for(client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= step)
    return status.resources_allocated["pid"]


@pytest.mark.slow
def test_twenty_submissions_in_a_burst_all_run_once_in_submission_order(
    fault_client: LlamaStackClient, tiny_model: Path, dataset_id: str
) -> None:
    names = [unique(f"burst{i:02d}") for i in range(20)]
    start = threading.Barrier(len(names))

    def submit(name: str) -> None:
        start.wait()
        _submit(fault_client, tiny_model, dataset_id, name)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(submit, names))
    finals = [wait_final(fault_client, name, timeout_s=900) for name in names]

    assert [s.status for s in finals] == ["completed"] * 20
    assert {j.job_uuid for j in fault_client.alpha.post_training.job.list()} >= set(names)
    assert all(recipe_starts(s.resources_allocated["job_dir"]) == 1 for s in finals)  # none run twice
    assert all(s.resources_allocated["attempts"] == 1 for s in finals)
    by_submission = sorted(finals, key=lambda s: s.scheduled_at)
    assert by_submission == sorted(finals, key=lambda s: s.started_at)  # launched in submission order
    # never more than max_concurrent_jobs running at once
    edges = sorted([(s.started_at, 1) for s in finals] + [(s.completed_at, -1) for s in finals])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert 1 <= peak <= SLOTS


def test_a_job_trains_with_its_share_of_the_cores_among_the_jobs_that_may_run_at_once(
    fault_client: LlamaStackClient, tiny_model: Path, dataset_id: str
) -> None:
    job_uuid = unique("threads")
    _submit(fault_client, tiny_model, dataset_id, job_uuid)
    status = wait_final(fault_client, job_uuid)

    resources = status.resources_allocated
    threads = threads_per_process(usable_cores(), SLOTS, 1)  # 1 on 2 cores: torch's default would run 2
    assert status.status == "completed", resources["error"]
    assert resources["cpu_threads"] == threads
    assert f"training on cpu with {threads} CPU thread" in Path(resources["log_path"]).read_text()


def test_sigkill_of_the_training_process_fails_the_job_with_the_signal_and_its_log(
    fault_client: LlamaStackClient, tiny_model: Path, dataset_id: str
) -> None:
    job_uuid = unique("killed")
    _submit(fault_client, tiny_model, dataset_id, job_uuid, long=True)
    pid = _training(fault_client, job_uuid, step=2)

    os.kill(pid, signal.SIGKILL)
    status = wait_final(fault_client, job_uuid, timeout_s=30)

    resources = status.resources_allocated
    assert status.status == "failed"
    assert resources["exit_code"] == -signal.SIGKILL
    assert f"training process killed by signal SIGKILL (pid {pid}" in resources["error"]
    log = Path(resources["log_path"])
    assert log.is_file() and str(log).startswith(resources["job_dir"])
    assert f"last lines of {log}" in resources["error"]
    last_line = log.read_text().strip().splitlines()[-1]
    assert last_line in resources["error"]  # the job's own log output
    assert process_gone(pid)


def test_cancel_mid_step_leaves_no_process_and_cancel_of_finished_or_unknown_jobs_is_refused(
    fault_client: LlamaStackClient, tiny_model: Path, dataset_id: str
) -> None:
    job_uuid = unique("cancel")
    _submit(fault_client, tiny_model, dataset_id, job_uuid, long=True)
    pid = _training(fault_client, job_uuid, step=3)
    fault_client.alpha.post_training.job.cancel(job_uuid=job_uuid)
    status = wait_final(fault_client, job_uuid, timeout_s=30)

    assert status.status == "cancelled" and status.resources_allocated["exit_code"] == -signal.SIGTERM
    assert process_gone(pid) and group_members(pid) == []
    with pytest.raises(llama_stack_client.ConflictError, match="already finished with status 'cancelled'"):
        fault_client.alpha.post_training.job.cancel(job_uuid=job_uuid)
    with pytest.raises(llama_stack_client.NotFoundError):
        fault_client.alpha.post_training.job.cancel(job_uuid=unique("unknown"))


def test_an_unwritable_checkpoint_location_fails_that_job_only(
    fault_server: StackServer, fault_client: LlamaStackClient, tiny_model: Path, dataset_id: str
) -> None:
    blocked, neighbour = unique("blocked"), unique("neighbour")
    _submit(fault_client, tiny_model, dataset_id, blocked)
    _submit(fault_client, tiny_model, dataset_id, neighbour)
    job_dir = Path(fault_server.env["TRL_OUTPUT_DIR"]) / blocked
    (job_dir / "checkpoints").write_text("a file where the checkpoint directory should go")

    failed, completed = wait_final(fault_client, blocked), wait_final(fault_client, neighbour)

    assert failed.status == "failed"
    assert f"{job_dir / 'checkpoints'}" in failed.resources_allocated["error"]
    assert "not writable" in failed.resources_allocated["error"]
    assert completed.status == "completed" and completed.checkpoints


def test_a_dataset_over_max_train_rows_is_413(fault_client: LlamaStackClient, tiny_model: Path) -> None:
    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(MAX_ROWS + 1)]
    with pytest.raises(llama_stack_client.APIStatusError, match=f"more than {MAX_ROWS} rows") as info:
        _submit(fault_client, tiny_model, register_rows(fault_client, rows), unique("too-many"))
    assert info.value.status_code == 413
    assert "training_config.data_config.dataset_id" in str(info.value)


def _finals(client: LlamaStackClient) -> dict[str, tuple]:
    jobs = client.alpha.post_training.job
    out = {}
    for job in jobs.list():
        status = jobs.status(job_uuid=job.job_uuid)
        artifacts = jobs.artifacts(job_uuid=job.job_uuid)
        out[job.job_uuid] = (status.model_dump(), artifacts.model_dump())
    return out


def _settled_finals(client: LlamaStackClient, timeout_s: float = 60) -> dict[str, tuple]:
    """_finals once every job that trained a step lists its curves.png: the server draws a finished job's last
    picture on a thread of its own, just after the job ends, and status lists the picture once it is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        finals = _finals(client)
        statuses = [status["resources_allocated"] for status, _ in finals.values()]
        if all(s["curves"] or not s["step"] for s in statuses) or time.monotonic() > deadline:
            return finals
        time.sleep(0.5)


@pytest.mark.slow
def test_history_survives_a_restart_and_a_server_crash_fails_the_running_job(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    with server_for(tmp_path, cancel_grace_period_s=5, max_concurrent_jobs=3) as server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows)
        done, cancelled, failed = unique("done"), unique("cancelled"), unique("failed")
        _submit(client, tiny_model, dataset_id, done)
        _submit(client, tiny_model, dataset_id, cancelled, long=True)
        _submit(client, tiny_model, dataset_id, failed, long=True)
        _training(client, cancelled)
        client.alpha.post_training.job.cancel(job_uuid=cancelled)
        os.kill(_training(client, failed), signal.SIGKILL)
        assert [wait_final(client, j).status for j in (done, cancelled, failed)] == ["completed", "cancelled", "failed"]
        before = _settled_finals(client)

    with server_for(tmp_path) as restarted:  # a clean stop, then a new server
        client = client_for(restarted)
        assert _finals(client) == before
        interrupted = unique("interrupted")
        _submit(client, tiny_model, dataset_id, interrupted, long=True)
        pid = _training(client, interrupted)
        kill_server(restarted)
        poll(lambda: process_gone(pid), timeout_s=15, what="training process gone with its server")

    # Restarted once more, now with an output directory that cannot be created (a path under a regular file).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with server_for(tmp_path, output_dir=str(blocker / "jobs")) as after_crash:
        client = client_for(after_crash)
        status = client.alpha.post_training.job.status(job_uuid=interrupted)
        assert status.status == "failed"
        assert status.resources_allocated["error"] == (
            f"the server stopped while this job was running (pid {pid}); no checkpoint to resume from"
        )
        assert {k: v for k, v in _finals(client).items() if k != interrupted} == before

        no_room = unique("no-room")
        _submit(client, tiny_model, dataset_id, no_room)
        status = client.alpha.post_training.job.status(job_uuid=no_room)
        assert status.status == "failed"
        assert (
            f"cannot write {blocker / 'jobs' / no_room}: the location is not writable"
            in (status.resources_allocated["error"])
        )
        assert after_crash.healthy() and not blocker.read_text()


@pytest.mark.slow
def test_sigterm_stops_the_running_job_and_the_restarted_server_runs_it_again_then_the_queue(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    stopped, waiting = unique("stopped"), unique("waiting")
    with server_for(tmp_path) as server:  # one job at a time
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows)
        client.alpha.post_training.preference_optimize(
            **dpo_request(stopped, tiny_model, dataset_id, n_epochs=3, max_steps_per_epoch=None)
        )
        _submit(client, tiny_model, dataset_id, waiting)
        pid = _training(client, stopped)
    # `with` stopped the server with SIGTERM: its shutdown() stopped the job and recorded why
    assert process_gone(pid) and group_members(pid) == []
    store = JobStore(tmp_path / "store" / "post_training_jobs.db")
    records = {r.job_uuid: r for r in map(JobRecord.model_validate_json, store.load_all())}
    store.close()
    assert records[stopped].status == "scheduled" and records[stopped].resume
    assert records[stopped].note.startswith("interrupted by a server shutdown; runs again")
    assert records[waiting].status == "scheduled" and records[waiting].attempts == 0

    with server_for(tmp_path) as restarted:
        client = client_for(restarted)
        first, second = wait_final(client, stopped), wait_final(client, waiting)

    assert (first.status, second.status) == ("completed", "completed")
    assert first.started_at < second.started_at
    assert first.resources_allocated["attempts"] == 2 and recipe_starts(first.resources_allocated["job_dir"]) == 2
    assert second.resources_allocated["attempts"] == 1 and recipe_starts(second.resources_allocated["job_dir"]) == 1
    assert [c.identifier for c in first.checkpoints][-1] == f"{stopped}-final"


def test_a_second_server_on_the_same_job_store_refuses_to_start_naming_the_first_ones_pid(
    fault_server: StackServer, fault_client: LlamaStackClient, tmp_path: Path
) -> None:
    jobs_before = [job.job_uuid for job in fault_client.alpha.post_training.job.list()]
    second = server_for(tmp_path, env={"SQLITE_STORE_DIR": fault_server.env["SQLITE_STORE_DIR"]})

    with pytest.raises(RuntimeError):
        second.start()

    assert fault_server.process is not None
    assert f"another server (pid {fault_server.process.pid}) is using the job store" in second.log_tail(400)
    assert [job.job_uuid for job in fault_client.alpha.post_training.job.list()] == jobs_before
