"""The CLI on an OGX server (or any server with OpenAI's fine-tuning API): `client.fine_tuning.jobs` through the
official openai client (never llama-stack-client). A job's progress comes from its newest ``metrics`` event, whose
``data`` holds the step, the total steps, TRL's logged metrics and the throughput."""

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from llama_stack_provider_trl.cli import train_file
from llama_stack_provider_trl.cli.display import FINAL_STATES, JobView, timestamp

NAME = "OGX server"
DEFAULT_URL = "http://localhost:8321/v1"
URL_VARIABLE = "OGX_URL"
METHODS = ("dpo", "supervised", "reinforcement")
KEYS = (*train_file.SHARED_KEYS, "hyperparameters", "grader", "suffix", "seed", "metadata", "integrations", "trl")
STARTED = "Fine-tuning job started"  # the event OpenAI's API (and this provider's) logs when training begins
PAGE = 20  # events read a request while looking for the newest metrics
JOBS_LISTED = 100  # `jobs`: the newest


class OpenAIJobs:
    """The jobs of one server with OpenAI's fine-tuning API, as the CLI's commands use them (main.JobsServer)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        # The bearer token for a server with auth; OGX without auth takes any
        self.client = openai.OpenAI(
            base_url=openai_base_url(url),
            api_key=os.environ.get("OPENAI_API_KEY") or "none",
            max_retries=1,
            timeout=timeout_s,
        )

    def chat(self, model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Iterator[str]:
        """A model's answer to the conversation, as its pieces arrive."""
        stream = self.client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def view(self, job_id: str) -> JobView:
        """The job and its progress: its events from the newest back to the newest metrics event."""
        job = self.client.fine_tuning.jobs.retrieve(job_id)
        return _view(job, self._newest_metrics(job_id))

    def detailed(self, job_id: str) -> JobView:
        """The job, its progress and when its training started (all its events)."""
        job = self.client.fine_tuning.jobs.retrieve(job_id)
        events = list(self._events(job_id))  # newest first
        metrics = next((e for e in events if e.type == "metrics"), None)
        started = [e.created_at for e in events if e.message == STARTED]
        return _view(job, metrics, timestamp(min(started)) if started else None)

    def final(self, view: JobView) -> JobView:
        return self.detailed(view.id)

    def views(self) -> list[JobView]:
        newest = self.client.fine_tuning.jobs.list(limit=JOBS_LISTED).data  # one page: iterating would read them all
        return [_view(job, self._newest_metrics(job.id)) for job in newest]

    def raw(self, job_id: str) -> dict[str, Any]:
        return self.client.fine_tuning.jobs.retrieve(job_id).to_dict(mode="json")

    def cancel(self, job_id: str) -> None:
        self.client.fine_tuning.jobs.cancel(job_id)

    def pause(self, job_id: str) -> None:
        self.client.fine_tuning.jobs.pause(job_id)

    def resume(self, job_id: str) -> None:
        self.client.fine_tuning.jobs.resume(job_id)

    def logs(self, job_id: str, follow: bool, interval_s: float) -> None:
        """The job's events, oldest first (OpenAI's API keeps no training log); with ``follow``, new ones until the
        job ends."""
        seen: set[str] = set()
        while True:
            finished = self.client.fine_tuning.jobs.retrieve(job_id).status in FINAL_STATES
            new = []
            for event in self._events(job_id):  # newest first: back to the last one printed
                if event.id in seen:
                    break
                new.append(event)
            for event in reversed(new):
                seen.add(event.id)
                print(f"{timestamp(event.created_at):%Y-%m-%d %H:%M:%S} {event.level:5} {event.message}", flush=True)
            if not follow or finished:
                return
            time.sleep(interval_s)

    def artifacts(self, job_id: str) -> list[str]:
        """The job's checkpoints (newest first: the fine-tuned model, then each saved one), then its result files."""
        lines = []
        for checkpoint in self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100):
            metrics = checkpoint.metrics
            scores = "".join(
                f"  {name} {value:.4f}"
                for name, value in (("train_loss", metrics.train_loss), ("valid_loss", metrics.valid_loss))
                if value is not None
            )
            lines.append(f"{checkpoint.fine_tuned_model_checkpoint}  step {checkpoint.step_number}{scores}")
        job = self.client.fine_tuning.jobs.retrieve(job_id)
        return lines + [f"result_file  {file_id}" for file_id in job.result_files]

    def submit(self, config_path: Path) -> str:
        """Upload the YAML's JSONL files (purpose fine-tune) and create its job; the job's id."""
        config = train_file.load(config_path, KEYS, METHODS)
        method = config["method"]
        request: dict[str, Any] = {
            "model": train_file.model_path(config_path, str(config["model"])),
            "training_file": self._upload(config_path, config["dataset"]),
            "method": {"type": method, method: {"hyperparameters": config.get("hyperparameters") or {}}},
        }
        if "grader" in config:  # reinforcement: the grader scoring the sampled answers
            request["method"][method]["grader"] = config["grader"]
        if config.get("validation_dataset"):
            request["validation_file"] = self._upload(config_path, config["validation_dataset"])
        request |= {key: config[key] for key in ("suffix", "seed", "metadata", "integrations") if key in config}
        if config.get("trl"):
            request["extra_body"] = {"trl": config["trl"]}
        return self.client.fine_tuning.jobs.create(**request).id

    def _upload(self, config_path: Path, name: str) -> str:
        """The local JSONL file, checked line by line here (the server checks each line's fields), then uploaded."""
        path = train_file.beside(config_path, name)
        train_file.read_jsonl(path)
        return self.client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune").id

    def _events(self, job_id: str) -> Iterator[FineTuningJobEvent]:
        """The job's events, newest first, page by page as they are read."""
        yield from self.client.fine_tuning.jobs.list_events(job_id, limit=PAGE)

    def _newest_metrics(self, job_id: str) -> FineTuningJobEvent | None:
        return next((event for event in self._events(job_id) if event.type == "metrics"), None)


def openai_base_url(url: str) -> str:
    """OpenAI clients take the API's root, ``.../v1``; a bare server address gets ``/v1``."""
    return url.rstrip("/") + "/v1" if urlsplit(url).path in ("", "/") else url


def error_message(exc: BaseException, url: str) -> str | None:
    """The line to print for a failed call of the openai client: the server's message, the parameter it names;
    None for any other exception."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else exc.message
        param = body.get("param")
        named = f"{param}: " if isinstance(param, str) and param and not message.startswith(param) else ""
        return f"{named}{message} (HTTP {exc.status_code})"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the {NAME} at {openai_base_url(url)} ({exc.message})"
    return None


def _view(job: FineTuningJob, metrics_event: FineTuningJobEvent | None, started: Any = None) -> JobView:
    data: dict[str, Any] = (metrics_event.data if metrics_event else None) or {}
    # TRL's epoch is fractional (1.5: half way through the second); the view counts epochs from 1
    epoch = max(math.ceil(data["epoch"]), 1) if isinstance(data.get("epoch"), int | float) else None
    hyperparameters = _hyperparameters(job)
    created, finished = timestamp(job.created_at), timestamp(job.finished_at)
    when = {"created": created, "started": started, "finished": finished}
    files = {"training_file": job.training_file, "validation_file": job.validation_file}
    results = {"fine_tuned_model": job.fine_tuned_model, "result_files": ", ".join(job.result_files)}
    return JobView(
        id=job.id,
        status=job.status,
        step=data.get("step"),
        total_steps=data.get("total_steps"),
        epoch=epoch,
        n_epochs=hyperparameters.get("n_epochs") if isinstance(hyperparameters.get("n_epochs"), int) else None,
        metrics={key: value for key, value in data.items() if isinstance(value, int | float)},
        tokens_per_s=data.get("tokens_per_s"),
        estimated_finish=timestamp(job.estimated_finish) if job.status == "running" else None,
        created_at=created,
        started_at=started,
        finished_at=finished,
        times={name: value for name, value in when.items() if value is not None},
        settings={
            "model": job.model,
            "method": job.method.type if job.method else "supervised",
            **{key: value for key, value in hyperparameters.items() if value is not None},
        },
        files={key: value for key, value in {**files, **results}.items() if value},
        results={key: value for key, value in results.items() if value},
        error=job.error.message if job.error else None,
    )


def _hyperparameters(job: FineTuningJob) -> dict[str, Any]:
    """The hyperparameters the job runs with: its method's, else the top-level (older) ones."""
    method = getattr(job.method, job.method.type, None) if job.method else None
    given = getattr(method, "hyperparameters", None) or job.hyperparameters
    return given.to_dict() if given is not None else {}
