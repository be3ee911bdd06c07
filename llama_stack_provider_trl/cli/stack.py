"""The CLI on a Llama Stack 0.6.1 server: its post_training API through llama-stack-client (never openai)."""

import ast
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from llama_stack_client import APIConnectionError, APIStatusError, LlamaStackClient

from llama_stack_provider_trl.cli import train_file
from llama_stack_provider_trl.cli.display import FINAL_STATES, JobView

NAME = "Llama Stack server"
DEFAULT_URL = "http://localhost:8321"
URL_VARIABLE = "LLAMA_STACK_URL"
CURVES_WAIT_S = 10.0
METHODS = ("dpo", "sft")
KEYS = (
    *train_file.SHARED_KEYS,
    "job_uuid",
    "algorithm_config",
    "training_config",
    "hyperparam_search_config",
    "logger_config",
    "checkpoint_dir",
)


class StackJobs:
    """The jobs of one 0.6.1 server, as the CLI's commands use them (main.JobsServer)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client = LlamaStackClient(base_url=url, max_retries=1, timeout=timeout_s)

    def view(self, job_id: str) -> JobView:
        return _view(self._status(job_id))

    def detailed(self, job_id: str) -> JobView:
        return self.view(job_id)

    def final(self, view: JobView) -> JobView:
        """The ended job, with its picture once the server has drawn it (right after the job ends)."""
        deadline = time.monotonic() + CURVES_WAIT_S
        while view.step and "curves" not in view.files and time.monotonic() < deadline:
            time.sleep(0.2)
            view = self.view(view.id)
        return view

    def views(self) -> list[JobView]:
        return [self.view(job.job_uuid) for job in self.client.alpha.post_training.job.list()]

    def raw(self, job_id: str) -> dict[str, Any]:
        return self._status(job_id).to_dict(mode="json")

    def cancel(self, job_id: str) -> None:
        self.client.alpha.post_training.job.cancel(job_uuid=job_id)

    def logs(self, job_id: str, follow: bool, interval_s: float) -> None:
        """The last lines of the job's training log (status ``logs``); with ``follow``, new ones until it ends."""
        printed = 0  # lines of the log already printed, by line number
        while True:
            res = (status := self._status(job_id)).resources_allocated or {}
            lines, total = res.get("logs") or [], res.get("log_lines") or 0
            first = total - len(lines)  # line number (0-based) of lines[0]
            if printed < first:
                print(f"... {first - printed} lines not shown: the whole log is {res.get('log_path')} on the server")
            for line in lines[max(printed - first, 0) :]:
                print(line, flush=True)
            printed = max(printed, total)
            if not follow or status.status in FINAL_STATES:
                return
            time.sleep(interval_s)

    def artifacts(self, job_id: str) -> list[str]:
        lines = []
        for checkpoint in self.client.alpha.post_training.job.artifacts(job_uuid=job_id).checkpoints:
            metrics = checkpoint.training_metrics
            scores = (
                f"  train_loss {metrics.train_loss:.4f} validation_loss {metrics.validation_loss:.4f} "
                f"perplexity {metrics.perplexity:.3f}"
                if metrics
                else ""
            )
            lines.append(f"{checkpoint.identifier}  epoch {checkpoint.epoch}  {checkpoint.path}{scores}")
        # The 0.6.1 artifacts response holds checkpoints only; the job's other files are named in its status.
        view = self.view(job_id)
        return lines + [f"{key}  {value}" for key, value in view.files.items()]

    def submit(self, config_path: Path) -> str:
        """Register the YAML's JSONL files as datasets and submit its job; the job's id."""
        config = train_file.load(config_path, KEYS, METHODS)
        if config["method"] == "dpo" and not isinstance(config.get("algorithm_config"), dict):
            raise train_file.TrainFileError(f"{config_path}: algorithm_config is required for dpo, e.g. {{beta: 0.1}}")
        job_uuid = config.get("job_uuid") or train_file.default_job_uuid(config["method"], config_path)
        training_config = dict(config.get("training_config") or {})
        data_config = dict(training_config.get("data_config") or {})
        train_rows = train_file.read_jsonl(train_file.beside(config_path, config["dataset"]))
        data_config["dataset_id"] = self._register(f"{job_uuid}-train", train_rows)
        if config.get("validation_dataset"):
            rows = train_file.read_jsonl(train_file.beside(config_path, config["validation_dataset"]))
            data_config["validation_dataset_id"] = self._register(f"{job_uuid}-validation", rows)
        if config["method"] == "dpo" and "data_format" not in data_config:
            data_config["data_format"] = "dialog" if isinstance(train_rows[0].get("chosen"), list) else "instruct"
        training_config["data_config"] = data_config
        common = {
            "job_uuid": job_uuid,
            "training_config": training_config,
            "hyperparam_search_config": config.get("hyperparam_search_config") or {},
            "logger_config": config.get("logger_config") or {},
        }
        model = train_file.model_path(config_path, str(config["model"]))
        post_training = self.client.alpha.post_training
        if config["method"] == "dpo":
            algorithm_config = config["algorithm_config"]
            post_training.preference_optimize(**common, finetuned_model=model, algorithm_config=algorithm_config)
        else:
            extra = {key: config[key] for key in ("algorithm_config", "checkpoint_dir") if config.get(key) is not None}
            post_training.supervised_fine_tune(**common, model=model, **extra)
        return job_uuid

    def _register(self, dataset_id: str, rows: list[dict[str, Any]]) -> str:
        self.client.beta.datasets.register(
            purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
        )
        return dataset_id

    def _status(self, job_id: str) -> Any:
        return self.client.alpha.post_training.job.status(job_uuid=job_id)


def error_message(exc: BaseException, url: str) -> str | None:
    """The line to print for a failed call of llama-stack-client; None for any other exception."""
    if isinstance(exc, APIStatusError):
        return _server_message(exc)
    if isinstance(exc, APIConnectionError):
        return f"cannot reach the {NAME} at {url} ({exc.message})"
    return None


def _view(status: Any) -> JobView:
    res = status.resources_allocated or {}
    finish = res.get("estimated_finish")
    when = {"scheduled": status.scheduled_at, "started": status.started_at, "finished": status.completed_at}
    curves = {"curves": res["curves"]} if res.get("curves") else {}
    return JobView(
        id=status.job_uuid,
        status=status.status,
        phase=res.get("phase"),
        step=res.get("step"),
        total_steps=res.get("total_steps"),
        epoch=res.get("epoch"),
        n_epochs=res.get("n_epochs"),
        metrics=res.get("metrics") or {},
        tokens_per_s=res.get("tokens_per_s"),
        estimated_finish=datetime.fromisoformat(finish) if finish and status.status == "in_progress" else None,
        created_at=status.scheduled_at,
        started_at=status.started_at,
        finished_at=status.completed_at,
        times={name: value for name, value in when.items() if value is not None},
        settings={key: res[key] for key in ("model", "device", "precision", "loss_type") if res.get(key) is not None},
        eval_metrics=res.get("eval_metrics") or {},
        files={key: res[key] for key in ("curves", "log_path") if res.get(key)},
        trackers={
            name: tracker["run"] + (f" (failed {tracker['error']})" if tracker.get("error") else "")
            for name, tracker in (res.get("trackers") or {}).items()
        },
        results={**{f"checkpoint {c.identifier}": c.path for c in status.checkpoints}, **curves},
        error=res.get("error"),
    )


def _server_message(exc: APIStatusError) -> str:
    """The server's own words. Llama Stack 0.6.1 answers {"error": {"message": ...}}; when the request does not
    fit the API's schema the message is a printed dict of {"errors": [...]}, each named by its field's path."""
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return f"{exc.message} (HTTP {exc.status_code})"
    if message.startswith("{'errors': ["):
        with contextlib.suppress(ValueError, SyntaxError):
            errors = ast.literal_eval(message)["errors"]
            message = "; ".join(_field_error(error) for error in errors)
    return f"{message} (HTTP {exc.status_code})"


def _field_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    path = ".".join(str(part) for part in error.get("loc", []) if part != "body")
    return f"{path}: {error.get('msg', error)}" if path else str(error.get("msg", error))
