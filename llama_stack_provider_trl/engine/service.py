"""The engine as a front door's provider starts it: the job store and JobManager from the provider config, then the
output directory, the device and the standby process."""

import logging
import sqlite3
from pathlib import Path

from llama_stack_provider_trl.common.storage_errors import describe_write_error
from llama_stack_provider_trl.config import WARM_STANDBY_MIN_CPUS, TrlPostTrainingConfig
from llama_stack_provider_trl.engine.cpu_threads import usable_cores
from llama_stack_provider_trl.engine.curves import CurvesPainter
from llama_stack_provider_trl.engine.devices import resolve_device
from llama_stack_provider_trl.engine.job_record import JobOwner
from llama_stack_provider_trl.engine.job_store import JobStore, StoreInUse
from llama_stack_provider_trl.engine.jobs import JobManager

logger = logging.getLogger(__name__)


def open_job_manager(config: TrlPostTrainingConfig) -> JobManager:
    try:
        store = JobStore(config.job_store_path, exclusive=True)
    except StoreInUse as exc:  # a second server on the same state would take over the first one's jobs
        raise RuntimeError(f"job_store_path: {exc}") from None
    except (sqlite3.Error, OSError) as exc:  # no durable records, no jobs: refuse to start, saying why
        raise RuntimeError(f"job_store_path: cannot open the job store {config.job_store_path}: {exc}") from exc
    return JobManager(
        config.max_concurrent_jobs,
        config.cancel_grace_period_s,
        store=store,
        resume_interrupted_jobs=config.resume_interrupted_jobs,
        curves=CurvesPainter(),
        job_environment=config.job_environment,
        max_running_per_user=config.max_running_jobs_per_user,
        unowned_jobs_owner=JobOwner(principal=config.unowned_jobs_owner) if config.unowned_jobs_owner else None,
    )


def start_job_manager(jobs: JobManager, config: TrlPostTrainingConfig, output_root: Path) -> str:
    """Start watching jobs; return the device they train on."""
    try:
        output_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # serve status and history anyway; each new job fails saying why
        logger.error("TRL training: %s", describe_write_error(output_root, exc))
    local = config.executor == "local"
    # On a Ray cluster the workers hold the devices: the server has none to look for (config.py checks it)
    device = resolve_device(config.device) if local else config.device
    standby = config.warm_standby if local else False
    if standby == "auto":
        standby = usable_cores() >= WARM_STANDBY_MIN_CPUS
    jobs.start(standby_device=device if standby else None)
    logger.info("TRL training: device %s, jobs under %s", device, output_root)
    return device
