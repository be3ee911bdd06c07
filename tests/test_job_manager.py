"""JobManager, the supervisor of training processes: the events it applies, what it rebuilds from its store
after a restart (finished, queued and interrupted jobs), and the process it keeps started ahead (standby).

No server here, and the supervised process is tests/fake_recipe.py: a stand-in that speaks the recipe's
protocol (job.json in, events out, exit code) in a fraction of a second, so these tests exercise the
supervisor itself. The same behaviour with real TRL jobs behind a real server: test_job_faults.py.
"""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_stack_provider_trl.algorithms.dpo import DPOJobSpec
from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
from llama_stack_provider_trl.common.events import CheckpointSaved, EventReader, EventWriter, Metrics
from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.common.recipe_process import THREAD_VARIABLES
from llama_stack_provider_trl.engine.cpu_threads import threads_per_process, usable_cores
from llama_stack_provider_trl.engine.job_record import JobOwner, JobRecord
from llama_stack_provider_trl.engine.job_store import JobStore
from llama_stack_provider_trl.engine.jobs import JobManager

from helpers import process_gone
from job_fixtures import FAKE_RECIPE, TESTS_DIR, launches, make_spec, poll

FINAL = {"completed", "failed", "cancelled"}
FAKE_RECIPE_VARIABLES = [
    "TRL_FAKE_STEP_S",
    "TRL_FAKE_BAD_EVENTS",
    "TRL_FAKE_LINGER_S",
]  # the fake recipe reads them: passed to jobs


@pytest.fixture
def managers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[JobManager]]:
    """Managers a test starts; every one is shut down at the end, so no process outlives the test."""
    monkeypatch.setenv("TRL_FAKE_STEP_S", "0.05")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    started: list[JobManager] = []
    yield started
    for manager in started:
        manager.shutdown()


def _manager(managers: list[JobManager], db: Path, standby_device: str | None = None, **kwargs) -> JobManager:
    options = {
        "max_concurrent_jobs": 1,
        "cancel_grace_period_s": 5.0,
        "recipe_module": FAKE_RECIPE,
        "job_environment": FAKE_RECIPE_VARIABLES,
        **kwargs,
    }
    manager = JobManager(store=JobStore(db), poll_interval_s=0.05, **options)
    manager.start(standby_device=standby_device)
    managers.append(manager)
    return manager


def _final(manager: JobManager, job_uuid: str, timeout_s: float = 60) -> JobRecord:
    return poll(lambda: (r := manager.get(job_uuid)).status in FINAL and r, timeout_s, f"{job_uuid} final")


def test_lines_that_are_not_events_are_skipped_and_the_job_still_completes(
    tmp_path: Path, managers: list[JobManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage, an event missing its keys and an unknown event sit between real events in events.jsonl."""
    monkeypatch.setenv("TRL_FAKE_BAD_EVENTS", "1")
    manager = _manager(managers, tmp_path / "jobs.db")
    manager.submit(make_spec(tmp_path / "jobs", "noisy"))

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda log_record: warnings.append(log_record.getMessage())  # type: ignore[method-assign]
    events_logger = logging.getLogger("llama_stack_provider_trl.common.events")
    events_logger.addHandler(handler)
    try:
        record = _final(manager, "noisy")
    finally:
        events_logger.removeHandler(handler)

    assert record.status == "completed", record.error
    assert record.step == 3 and record.metrics == {"loss": 1 / 3}
    assert [c.identifier for c in record.checkpoints] == ["noisy-final"]
    skipped = [m for m in warnings if "skipping the event" in m]
    assert len(skipped) == 3 and all(m.startswith("job noisy: skipping the event at byte ") for m in skipped)


def test_finished_jobs_read_the_same_after_a_restart(tmp_path: Path, managers: list[JobManager]) -> None:
    db, root = tmp_path / "jobs.db", tmp_path / "jobs"
    first = _manager(managers, db)
    first.submit(make_spec(root, "ok"), JobOwner(principal="alice", attributes={"roles": ["user"]}))
    first.submit(make_spec(root, "cancel-me", max_steps_per_epoch=10_000))
    assert _final(first, "ok").status == "completed"
    poll(lambda: first.get("cancel-me").step >= 1, what="cancel-me running")
    first.cancel("cancel-me")
    before = {r.job_uuid: r for r in [_final(first, "ok"), _final(first, "cancel-me")]}
    first.shutdown()

    second = _manager(managers, db)
    after = {r.job_uuid: r for r in second.list()}

    assert list(after) == ["ok", "cancel-me"]
    assert after == before  # status, timestamps, progress, metrics, checkpoints, error, owner: all of it
    assert after["ok"].owner == JobOwner(principal="alice", attributes={"roles": ["user"]})
    assert after["ok"].checkpoints[0].path.endswith("final") and after["cancel-me"].status == "cancelled"


def test_shutdown_leaves_running_and_queued_jobs_to_run_after_restart_in_order(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    db, root = tmp_path / "jobs.db", tmp_path / "jobs"
    first = _manager(managers, db)
    specs = [make_spec(root, "long", max_steps_per_epoch=60), make_spec(root, "second"), make_spec(root, "third")]
    for spec in specs:
        first.submit(spec)
    running = poll(lambda: (r := first.get("long")).step >= 1 and r, what="long running")
    first.shutdown()

    assert process_gone(running.pid)
    interrupted = JobRecord.model_validate_json(JobStore(db).load_all()[0])
    assert interrupted.status == "scheduled" and interrupted.resume
    assert "interrupted by a server shutdown" in interrupted.note

    second = _manager(managers, db)
    finals = [_final(second, spec.job_uuid) for spec in specs]

    assert [r.status for r in finals] == ["completed"] * 3
    assert finals[0].started_at < finals[1].started_at < finals[2].started_at  # submission order kept
    assert [len(launches(s.job_dir)) for s in specs] == [2, 1, 1]  # none lost, none run twice
    assert launches(specs[0].job_dir)[1][2:] == ["--resume"]
    assert finals[0].attempts == 2


def test_shutdown_with_resume_off_cancels_running_jobs(tmp_path: Path, managers: list[JobManager]) -> None:
    manager = _manager(managers, tmp_path / "jobs.db", resume_interrupted_jobs=False)
    manager.submit(make_spec(tmp_path / "jobs", "long", max_steps_per_epoch=10_000))
    poll(lambda: manager.get("long").step >= 1, what="long running")
    manager.shutdown()

    record = JobRecord.model_validate_json(JobStore(tmp_path / "jobs.db").load_all()[0])
    assert record.status == "cancelled" and "server shut down" in record.error


def _complete_checkpoint(spec: DPOJobSpec, step: int) -> Path:
    """An epoch checkpoint directory as Trainer leaves it once the save is complete."""
    checkpoint = spec.path / "checkpoints" / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    return checkpoint


def _interrupted(db: Path, spec, pid: int) -> None:
    """The store as a server that was SIGKILLed while running ``spec`` leaves it."""
    record = JobRecord(spec=spec, status="in_progress", phase="training", pid=pid, attempts=1)
    JobStore(db).save(spec.job_uuid, record.status, record.model_dump_json())


def test_job_interrupted_without_a_checkpoint_is_failed_with_the_reason(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    db = tmp_path / "jobs.db"
    _interrupted(db, make_spec(tmp_path / "jobs", "crashed"), pid=2**22 + 1)

    record = _manager(managers, db).get("crashed")

    assert record.status == "failed"
    assert record.error == (
        f"the server stopped while this job was running (pid {2**22 + 1}); no checkpoint to resume from"
    )


@pytest.mark.parametrize("launched_as", ["fresh", "standby"])
def test_job_interrupted_with_a_checkpoint_resumes_and_its_stray_process_is_killed(
    tmp_path: Path, managers: list[JobManager], launched_as: str
) -> None:
    db = tmp_path / "jobs.db"
    spec = make_spec(tmp_path / "jobs", "crashed")
    checkpoint = _complete_checkpoint(spec, step=2)
    (spec.path / "checkpoints" / "checkpoint-3").mkdir()  # cut short: no trainer_state.json
    # A training process that somehow outlived its server: started with the job dir on its command line, or a
    # standby process that was handed the job and moved into its directory
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", spec.job_dir if launched_as == "fresh" else "--standby"],
        cwd=spec.path,
        start_new_session=True,
    )
    _interrupted(db, spec, pid=stray.pid)

    manager = _manager(managers, db)
    stray.wait(timeout=10)
    record = _final(manager, "crashed")

    assert stray.returncode == -signal.SIGKILL
    assert last_trainer_checkpoint(spec.path) == checkpoint
    assert record.status == "completed" and record.attempts == 2
    assert record.note.endswith(f"resuming from {checkpoint}")
    assert launches(spec.job_dir)[0][2:] == ["--resume"]


def test_a_pid_reused_by_another_process_is_not_killed(tmp_path: Path, managers: list[JobManager]) -> None:
    db = tmp_path / "jobs.db"
    _interrupted(db, make_spec(tmp_path / "jobs", "crashed"), pid=os.getpid())  # this test process

    assert _manager(managers, db).get("crashed").status == "failed"  # and we are still here


def test_a_resumed_job_takes_in_what_its_earlier_run_reported_after_the_last_save_of_its_record(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    """The server died after the recipe reported an epoch checkpoint but before the record took it in."""
    db = tmp_path / "jobs.db"
    spec = make_spec(tmp_path / "jobs", "crashed")
    checkpoint = _complete_checkpoint(spec, step=2)
    EventWriter(spec.path / EVENTS_FILE).emit(
        CheckpointSaved(identifier="crashed-epoch-1", epoch=1, step=2, path=str(checkpoint), train_loss=0.5)
    )
    _interrupted(db, spec, pid=2**22 + 1)

    record = _final(_manager(managers, db), "crashed")

    assert record.status == "completed" and record.attempts == 2
    assert [c.identifier for c in record.checkpoints] == ["crashed-epoch-1", "crashed-final"]


def _standby_pids() -> set[int]:
    """Live standby recipe processes this test process started (a JobManager's watcher thread forks them; an
    in-process library client elsewhere in the session has one too). A standby keeps its command line once it
    has a job, so a running job's process is listed too."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"--standby" in cmdline:
            pids.add(int(proc.name))
    return pids


def _manager_with_standby(managers: list[JobManager], db: Path, **kwargs) -> tuple[JobManager, set[int], int]:
    """A manager keeping a standby process, the standby processes there were before it, and its standby's pid."""
    others = _standby_pids()
    manager = _manager(managers, db, standby_device="cpu", **kwargs)
    [standby] = poll(lambda: _standby_pids() - others, what="a standby process")
    return manager, others, standby


def test_jobs_run_in_the_standby_process_and_a_new_one_waits_for_the_next(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    manager, others, first = _manager_with_standby(managers, tmp_path / "jobs.db")
    specs = [make_spec(tmp_path / "jobs", name) for name in ("a", "b")]

    manager.submit(specs[0])
    record = _final(manager, "a")

    assert record.status == "completed" and record.pid == first  # the job ran in the process started ahead
    assert "step 3/3" in record.log_path.read_text()  # and its output went to the job's log
    [second] = poll(lambda: _standby_pids() - others - {first}, what="the next standby process")
    manager.submit(specs[1])
    assert _final(manager, "b").pid == second
    manager.shutdown()
    assert poll(lambda: not _standby_pids() - others, timeout_s=5, what="no standby after shutdown")


@pytest.mark.parametrize("launched_as", ["fresh", "standby"])
def test_a_cpu_job_started_fresh_or_from_standby_runs_its_share_of_the_cores(
    tmp_path: Path, managers: list[JobManager], monkeypatch: pytest.MonkeyPatch, launched_as: str
) -> None:
    for name in THREAD_VARIABLES:  # as a server whose operator set none
        monkeypatch.delenv(name, raising=False)
    db = tmp_path / "jobs.db"
    if launched_as == "standby":
        manager, _, _ = _manager_with_standby(managers, db, max_concurrent_jobs=2)
    else:
        manager = _manager(managers, db, max_concurrent_jobs=2)

    manager.submit(make_spec(tmp_path / "jobs", "a"))
    record = _final(manager, "a")

    assert record.status == "completed" and record.warm_start is (launched_as == "standby")
    assert record.setup["cpu_threads"] == threads_per_process(usable_cores(), 2, 1)


def test_a_standby_process_that_dies_before_its_job_leaves_jobs_to_fresh_processes(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    manager, others, standby = _manager_with_standby(managers, tmp_path / "jobs.db")
    os.killpg(standby, signal.SIGKILL)  # as an install that cannot import would end it

    manager.submit(make_spec(tmp_path / "jobs", "a"))
    record = _final(manager, "a")

    assert record.status == "completed" and record.pid != standby
    assert not _standby_pids() - others  # no new standby processes: they would fail the same way, over and over


def test_a_cancel_that_arrives_after_the_job_reported_completion_leaves_it_completed(
    tmp_path: Path, managers: list[JobManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRL_FAKE_LINGER_S", "1.5")  # completed, still exiting
    manager = _manager(managers, tmp_path / "jobs.db")
    manager.submit(make_spec(tmp_path / "jobs", "done"))
    poll(lambda: manager.get("done").checkpoints, what="the final model reported")

    manager.cancel("done")
    record = _final(manager, "done")

    assert record.status == "completed" and record.exit_code == 0


class _StoreThatFails(JobStore):
    """A job store whose disk refuses writes while ``failing`` is set."""

    failing = False

    def save(self, job_uuid: str, status: str, record_json: str) -> None:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        super().save(job_uuid, status, record_json)


def test_pause_and_resume_that_the_store_cannot_record_leave_the_job_as_it_was(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    store = _StoreThatFails(tmp_path / "jobs.db")
    manager = JobManager(1, 5.0, store=store, recipe_module=FAKE_RECIPE, poll_interval_s=0.05)
    manager.start()
    managers.append(manager)
    root = tmp_path / "jobs"
    manager.submit(make_spec(root, "first", max_steps_per_epoch=20))  # holds the only slot a while
    manager.submit(make_spec(root, "waiting"))

    for change, before in ((manager.pause, "scheduled"), (manager.resume, "paused")):
        store.failing = True
        with pytest.raises(sqlite3.OperationalError):
            change("waiting")
        assert manager.get("waiting").status == before
        store.failing = False
        change("waiting")  # recorded this time

    assert _final(manager, "waiting").status == "completed"


def test_events_rewritten_shorter_than_what_was_read_are_read_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    writer = EventWriter(path)
    for step in (1, 2, 3):
        writer.emit(Metrics(step=step, total_steps=9, epoch=1, metrics={"loss": 1.0}))
    writer.close()
    reader = EventReader(path)
    assert len(reader.read_new()) == 3

    path.write_text("")  # truncated, as a restored or rotated file would be
    writer = EventWriter(path)
    writer.emit(Metrics(step=4, total_steps=9, epoch=1, metrics={"loss": 0.5}))
    writer.close()

    assert [event.step for event in reader.read_new()] == [4]


def test_a_jobs_process_holds_none_of_the_servers_credentials_unless_the_operator_names_them(
    tmp_path: Path, managers: list[JobManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRL_FAKE_STEP_S", "0.5")  # long enough to read the running process's environment
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "server-mlflow-token")
    monkeypatch.setenv("WANDB_API_KEY", "server-wandb-key")
    monkeypatch.setenv("SOME_SERVER_SECRET", "server-secret")
    manager = _manager(managers, tmp_path / "jobs.db", job_environment=[*FAKE_RECIPE_VARIABLES, "WANDB_API_KEY"])

    manager.submit(make_spec(tmp_path / "jobs", "a"))
    running = poll(lambda: (r := manager.get("a")).pid and r.status == "in_progress" and r, what="a running")
    environ = Path(f"/proc/{running.pid}/environ").read_bytes().decode().split("\0")
    variables = dict(item.split("=", 1) for item in environ if "=" in item)
    _final(manager, "a")

    assert "MLFLOW_TRACKING_TOKEN" not in variables and "SOME_SERVER_SECRET" not in variables
    assert variables["WANDB_API_KEY"] == "server-wandb-key"  # the operator named it (job_environment)
    assert variables["PATH"] == os.environ["PATH"] and variables["TRL_FAKE_STEP_S"] == "0.5"


def test_a_user_at_max_running_jobs_per_user_waits_while_another_users_job_takes_the_free_slot(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    manager = _manager(managers, tmp_path / "jobs.db", max_concurrent_jobs=2, max_running_per_user=1)
    root, alice, bob = tmp_path / "jobs", JobOwner(principal="alice"), JobOwner(principal="bob")
    manager.submit(make_spec(root, "alice-long", max_steps_per_epoch=40), alice)
    manager.submit(make_spec(root, "alice-next"), alice)
    manager.submit(make_spec(root, "bob-first", max_steps_per_epoch=40), bob)

    poll(lambda: manager.get("bob-first").status == "in_progress", what="bob's job started")
    waiting = manager.get("alice-next")
    assert waiting.status == "scheduled" and manager.get("alice-long").status == "in_progress"
    assert waiting.waiting is not None
    assert waiting.waiting.startswith("user alice has 1 job running, the most max_running_jobs_per_user lets")

    assert _final(manager, "alice-next").status == "completed"
    assert manager.get("alice-next").started_at > manager.get("alice-long").completed_at


def test_jobs_recorded_without_an_owner_belong_to_unowned_jobs_owner_from_then_on(
    tmp_path: Path, managers: list[JobManager]
) -> None:
    db, root = tmp_path / "jobs.db", tmp_path / "jobs"
    before_auth = _manager(managers, db)
    before_auth.submit(make_spec(root, "old"))
    _final(before_auth, "old")
    before_auth.shutdown()

    assert _manager(managers, db, unowned_jobs_owner=JobOwner(principal="admin")).get("old").owner == JobOwner(
        principal="admin"
    )
    managers[-1].shutdown()
    assert _manager(managers, db).get("old").owner == JobOwner(principal="admin")  # stored, not just assumed
