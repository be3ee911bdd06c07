"""What a person watching a job looks at besides its numbers: the end of its log, when it should finish, its
picture, where its trackers record it. The 0.6.1 status adds these to resources_allocated."""

from typing import Any

from llama_stack_provider_trl.common.job_spec import CURVES_FILE, TENSORBOARD_DIR
from llama_stack_provider_trl.engine.job_record import FINAL_STATES, JobRecord
from llama_stack_provider_trl.engine.log_tail import LogTail

STATUS_LOG_LINES = 20  # lines of the job's log in its status; the whole log is at log_path


class StatusExtras:
    def __init__(self) -> None:
        self._logs = LogTail()

    def observed(self, record: JobRecord) -> dict[str, Any]:
        logs, log_lines = self._logs.read(record.log_path, STATUS_LOG_LINES, partial=record.status in FINAL_STATES)
        curves = record.spec.path / CURVES_FILE
        finish = record.estimated_finish if record.status == "in_progress" else None
        return {
            "logs": logs,
            "log_lines": log_lines,
            "estimated_finish": finish.isoformat() if finish else None,
            "curves": str(curves) if curves.is_file() else None,
            "trackers": _trackers(record),
        }


def _trackers(record: JobRecord) -> dict[str, dict[str, str | None]]:
    """Each tracker the job reports to: where its run is, and the error that turned it off, if one did."""
    trackers, job_dir = record.spec.trackers, record.spec.path
    where = {
        "tensorboard": str(job_dir / TENSORBOARD_DIR) if trackers.tensorboard else None,
        "mlflow": f"{trackers.mlflow.tracking_uri} (experiment {trackers.mlflow.experiment_name})"
        if trackers.mlflow
        else None,
        "wandb": f"{job_dir / 'wandb'} ({trackers.wandb.mode}, project {trackers.wandb.project})"
        if trackers.wandb
        else None,
    }
    return {
        name: {"run": location, "error": record.tracker_errors.get(name)}
        for name, location in where.items()
        if location is not None
    }
