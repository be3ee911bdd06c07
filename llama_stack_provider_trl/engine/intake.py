"""After admission: write an admitted job's directory (its rows and job.json), then submit it to the job manager.

A job whose directory the server cannot write is still recorded, as failed saying why: the server's storage,
not the request, is at fault. A refusal here is a RequestError like admission's (409 for a name already taken,
507 when the job store cannot record the job).
"""

import json
import sqlite3
from http import HTTPStatus
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.common.job_spec import EVAL_DATA_FILE, TRAIN_DATA_FILE
from llama_stack_provider_trl.common.storage_errors import describe_write_error
from llama_stack_provider_trl.engine.admission import AdmittedJob
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_record import JobOwner
from llama_stack_provider_trl.engine.jobs import JobAlreadyExists, JobManager


def write_job(job: AdmittedJob, job_uuid_field: str) -> str | None:
    """Claim the job's directory and write what its process reads; the storage problem, if any, as a message."""
    job_dir = job.spec.path
    try:
        job_dir.mkdir()  # atomic claim of the name: a concurrent request with the same job_uuid gets 409
    except FileExistsError as exc:
        raise RequestError(
            job_uuid_field,
            f"'{job.spec.job_uuid}' already has a directory in {job_dir.parent} from an earlier job; choose another "
            f"{job_uuid_field}",
            HTTPStatus.CONFLICT,
        ) from exc
    except OSError as exc:
        return f"the job's directory: {describe_write_error(job_dir, exc)}"
    try:
        _write_jsonl(job_dir / TRAIN_DATA_FILE, job.train_rows)
        if job.eval_rows is not None:
            _write_jsonl(job_dir / EVAL_DATA_FILE, job.eval_rows)
        job.spec.write()
    except OSError as exc:
        return f"the job's data: {describe_write_error(exc.filename or job_dir, exc)}"
    return None


def submit_job(
    jobs: JobManager, job: AdmittedJob, write_problem: str | None, job_uuid_field: str, owner: JobOwner | None = None
) -> None:
    """Queue the job for ``owner``, or record it as failed with the problem ``write_job`` met."""
    try:
        if write_problem is None:
            jobs.submit(job.spec, owner)
        else:
            jobs.submit_failed(job.spec, write_problem, owner)
    except JobAlreadyExists as exc:
        raise RequestError(
            job_uuid_field, f"a job named '{job.spec.job_uuid}' already exists", HTTPStatus.CONFLICT
        ) from exc
    except (sqlite3.Error, OSError) as exc:
        raise RequestError(
            "job_store_path", f"the job store cannot record the job: {exc}", HTTPStatus.INSUFFICIENT_STORAGE
        ) from exc


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
