"""What one user and one job may take of a shared server, checked in-process on the engine both front doors call:
unfinished jobs per user (pausing frees no room, resume checks again), the steps a job logs and the checkpoints it
keeps, and the disk that queued jobs will still fill."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.demo.small_disk import fill_up, small_disk
from llama_stack_provider_trl.engine.disk_space import jsonl_bytes, room_needed
from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.llama_stack.access import job_access
from llama_stack_provider_trl.llama_stack.stack_api import PreferenceOptimizeRequest
from llama_stack_provider_trl.llama_stack.stack_requests import dpo_job_request

from helpers import dpo_request
from job_fixtures import EIGHT_PAIRS, EightRows


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[Engine]]:
    """Engines a test opens (not started: their jobs stay queued); each lets go of its job store at the end."""
    opened: list[Engine] = []
    yield opened
    for engine in opened:
        engine.jobs.shutdown()


def _engine(engines: list[Engine], tmp_path: Path, **config: Any) -> Engine:
    settings = {"output_dir": str(tmp_path / "jobs"), "job_store_path": str(tmp_path / "jobs.db"), **config}
    engine = Engine(TrlPostTrainingConfig(**settings), job_access([]))
    engine.output_root.mkdir(parents=True, exist_ok=True)  # what start() does, besides watching jobs
    engines.append(engine)
    return engine


def _create(engine: Engine, job_uuid: str, model: str | Path = "org/model", **request: Any) -> None:
    job_request = dpo_job_request(
        PreferenceOptimizeRequest.model_validate(dpo_request(job_uuid, model, "ds", **request))
    )
    asyncio.run(engine.create(job_request, EightRows()))


def test_paused_jobs_count_against_max_queued_jobs_per_user(engines: list[Engine], tmp_path: Path) -> None:
    engine = _engine(engines, tmp_path, max_queued_jobs_per_user=2)
    for job_uuid in ("a", "b"):
        _create(engine, job_uuid)
        engine.pause(job_uuid)  # out of the queue, but still the user's

    with pytest.raises(RequestError) as refused:
        _create(engine, "c")

    assert refused.value.status == 429 and refused.value.field == "max_queued_jobs_per_user"
    assert "2 of your jobs are queued, paused or running" in str(refused.value)


def test_resume_checks_max_queued_jobs_per_user_again(engines: list[Engine], tmp_path: Path) -> None:
    engine = _engine(engines, tmp_path, max_queued_jobs_per_user=3)
    for job_uuid in ("a", "b", "c"):
        _create(engine, job_uuid)
        engine.pause(job_uuid)
    engine.config.max_queued_jobs_per_user = 2  # lowered by the operator since (a restart with the new config)

    with pytest.raises(RequestError, match="max_queued_jobs_per_user: 2 of your jobs are") as refused:
        engine.resume("a")

    assert refused.value.status == 429 and engine.jobs.get("a").status == "paused"
    engine.jobs.cancel("c")
    engine.resume("a")
    assert engine.jobs.get("a").status == "scheduled"


def test_a_job_that_would_log_more_steps_than_the_operator_keeps_is_refused_naming_logging_steps(
    engines: list[Engine], tmp_path: Path
) -> None:
    engine = _engine(engines, tmp_path, max_logged_steps_per_job=10)
    # 8 rows, batch 4: 2 steps an epoch, 6 epochs: 12 steps
    with pytest.raises(RequestError, match=r"^hyperparam_search_config\.logging_steps: logging every 1 of up to 12"):
        _create(engine, "chatty", n_epochs=6, max_steps_per_epoch=None)
    _create(engine, "quieter", n_epochs=6, max_steps_per_epoch=None, hyperparam_search_config={"logging_steps": 2})


def test_a_job_that_would_keep_more_epoch_checkpoints_than_the_operator_allows_is_refused(
    engines: list[Engine], tmp_path: Path
) -> None:
    engine = _engine(engines, tmp_path, max_checkpoints_per_job=2)
    with pytest.raises(RequestError, match=r"^hyperparam_search_config\.save_total_limit: the job would keep 3 epoch"):
        _create(engine, "many", n_epochs=3)
    _create(engine, "rotated", n_epochs=3, hyperparam_search_config={"save_total_limit": 2})


def test_the_disk_check_counts_what_queued_jobs_will_still_write(
    engines: list[Engine], tmp_path: Path, tiny_model: Path
) -> None:
    probe = _engine(engines, tmp_path / "probe")
    _create(probe, "probe", tiny_model, n_epochs=2)
    one_job = room_needed(probe.jobs.get("probe").spec, jsonl_bytes(EIGHT_PAIRS), []).total
    with small_disk(tmp_path / "small-disk", one_job * 3 // 2) as refused:  # room for one such job, not two
        if refused:
            pytest.skip(refused)
        engine = _engine(engines, tmp_path, output_dir=str(tmp_path / "small-disk" / "jobs"))
        _first_fits_the_second_waits(engine, tiny_model)


def _first_fits_the_second_waits(engine: Engine, tiny_model: Path) -> None:

    _create(engine, "first", tiny_model, n_epochs=2)
    with pytest.raises(RequestError) as refused:
        _create(engine, "second", tiny_model, n_epochs=2)

    assert refused.value.status == 507 and refused.value.field == "output_dir"
    message = str(refused.value)
    assert "2 epoch checkpoints of" in message and f"its data {jsonl_bytes(EIGHT_PAIRS)} B, log and events" in message
    assert "still to come from 1 unfinished job" in message
    engine.jobs.cancel("first")
    _create(engine, "second", tiny_model, n_epochs=2)  # the cancelled job writes nothing more


def test_pause_resume_and_cancel_the_store_cannot_record_are_507_and_leave_the_job_as_it_was(
    engines: list[Engine], tmp_path: Path
) -> None:
    store_disk = tmp_path / "store-disk"
    with small_disk(store_disk, 1 << 20) as refused:
        if refused:
            pytest.skip(refused)
        engine = _engine(engines, tmp_path, job_store_path=str(store_disk / "jobs.db"))
        _create(engine, "a")
        filler = fill_up(store_disk)

        for change in (engine.pause, engine.cancel):
            with pytest.raises(RequestError, match=r"^job_store_path: the job store cannot record the change") as no:
                change("a")
            assert no.value.status == 507 and engine.jobs.get("a").status == "scheduled"
        filler.unlink()
        engine.cancel("a")
        assert engine.jobs.get("a").status == "cancelled"
        engine.jobs.shutdown()  # lets go of the store before its disk goes
