"""The job's experiment trackers: transformers' own integration callbacks, each behind a guard.

``report_to`` would add the same callbacks (TensorBoardCallback, MLflowCallback, WandbCallback) unguarded, so a
tracker that raises (its store locked or full, its server gone) would end the training with it. Here each one is
built and called through TrackerGuard: its first error is reported as an event and in the job's log, the tracker is
left alone from then on, and the training goes on. The error's traceback goes to <job_dir>/trackers.log, which no
caller reads. A tracker that talks to a server (an MLflow tracking server, W&B online) is reported by its error's
type alone: the message of such an error carries what the server answered, and a caller who chose the server
(tracking_uri) must not read the answers of hosts the job reached through the server's network.
"""

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import MLflowCallback, TensorBoardCallback, WandbCallback

from llama_stack_provider_trl.common.job_spec import TENSORBOARD_DIR, JobSpecBase, WandbSpec

TRACKERS_LOG = "trackers.log"  # in the job's directory: each failing tracker's traceback, for the operator

# A tracking server that does not answer costs a few seconds, not MLflow's default of minutes of retries per call.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

OnFailure = Callable[[str, str], None]  # (tracker, error)


class TrackerGuard(TrainerCallback):
    """Forwards every callback event to one tracker until the tracker raises, then to nothing."""

    def __init__(self, name: str, tracker: TrainerCallback, on_failure: OnFailure, report: "FailureReport") -> None:
        self.name = name
        self.tracker: TrainerCallback | None = tracker
        self._on_failure = on_failure
        self._report = report

    def _forward(self, event: str, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.tracker is None:
            return None
        try:
            return getattr(self.tracker, event)(args, state, control, **kwargs)
        except Exception as exc:  # any failure of a tracker is the tracker's, never the training's
            self.tracker = None
            self._report(self.name, event, exc, self._on_failure)
            return None


def _forwarder(event: str) -> Callable[..., Any]:
    def forward(self: TrackerGuard, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self._forward(event, args, state, control, **kwargs)

    forward.__name__ = event
    return forward


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    setattr(TrackerGuard, _event, _forwarder(_event))


class SynchronousMLflowCallback(MLflowCallback):
    """MLflowCallback, logging each step before the next. By default it logs through MLflow's own queue, so a failing
    store is noticed only when the run ends (after the queue's retries) and the steps in between are lost unseen;
    logged synchronously, the failure comes at the step that fails and the guard turns the tracker off there."""

    def setup(self, args: Any, state: Any, model: Any) -> None:
        super().setup(args, state, model)
        self._async_log = False


class RunStartingWandbCallback(WandbCallback):
    """WandbCallback, starting the run itself with the job's project, name, entity and tags (WandbCallback starts one
    only when none is running, from no more than a project and a name) and finishing it when training ends."""

    def __init__(self, wandb: WandbSpec, *, run_dir: Path, default_name: str) -> None:
        super().__init__()
        self._run = {
            "project": wandb.project,
            "name": wandb.name or default_name,
            "entity": wandb.entity,
            "tags": wandb.tags or None,
            "mode": wandb.mode,
            "dir": str(run_dir),  # its runs go to <job_dir>/wandb
        }

    def setup(self, args: Any, state: Any, model: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self._wandb.run is None:
            self._wandb.init(**self._run)
        super().setup(args, state, model, **kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Also finish the run (WandbCallback leaves it open for the caller), so that all it logged is written out
        before the job reports its end, not at its process's exit."""
        super().on_train_end(args, state, control, **kwargs)
        if self._wandb.run is not None:
            self._wandb.finish()


def tracker_callbacks(spec: JobSpecBase, on_failure: OnFailure) -> list[TrackerGuard]:
    """The trackers the job asked for, configured through the environment variables transformers reads (this
    process runs one job). A tracker that cannot even be built is reported like one that fails later."""
    trackers = spec.trackers
    report = FailureReport(spec.path / TRACKERS_LOG, remote=_remote_trackers(spec))
    builders: list[tuple[str, Callable[[], TrainerCallback]]] = []
    if trackers.tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(spec.path / TENSORBOARD_DIR)
        builders.append(("tensorboard", TensorBoardCallback))
    if trackers.mlflow is not None:
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        os.environ["MLFLOW_TRACKING_URI"] = trackers.mlflow.tracking_uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = trackers.mlflow.experiment_name
        if "mlflow" in report.remote:  # MLflow logs the start of a body it cannot parse: not into the job's log
            logging.getLogger("mlflow").setLevel(logging.ERROR)
        builders.append(("mlflow", SynchronousMLflowCallback))
    if trackers.wandb is not None:
        os.environ["WANDB_SILENT"] = "true"
        wandb = trackers.wandb
        builders.append(
            ("wandb", lambda: RunStartingWandbCallback(wandb, run_dir=spec.path, default_name=spec.job_uuid))
        )
    guards = []
    for name, build in builders:
        try:
            tracker = build()
        except Exception as exc:
            report(name, "setup", exc, on_failure)
            continue
        # One class per tracker: Trainer warns about two callbacks of one class
        guard = type(f"{name.capitalize()}Guard", (TrackerGuard,), {})
        guards.append(guard(name, tracker, on_failure, report))
    return guards


def _remote_trackers(spec: JobSpecBase) -> frozenset[str]:
    """The trackers of this job that send to a server over the network."""
    trackers = spec.trackers
    remote = set()
    if trackers.mlflow is not None and trackers.mlflow.tracking_uri.startswith(("http://", "https://")):
        remote.add("mlflow")
    if trackers.wandb is not None and trackers.wandb.mode == "online":
        remote.add("wandb")
    return frozenset(remote)


class FailureReport:
    """Says that a tracker failed: in the job's log and as an event (what a caller reads), with the traceback in
    trackers.log (what the operator reads)."""

    def __init__(self, log_path: Path, remote: frozenset[str]) -> None:
        self._log_path = log_path
        self.remote = remote

    def __call__(self, name: str, event: str, exc: Exception, on_failure: OnFailure) -> None:
        if name in self.remote:  # what the server answered stays out of what a caller reads
            error = f"{event}: {type(exc).__name__} (the tracking server's answer is in {TRACKERS_LOG})"
        else:
            error = f"{event}: {type(exc).__name__}: {exc}"
        print(f"tracker {name} failed and is off for the rest of this job; training goes on: {error}", file=sys.stderr)
        try:
            with self._log_path.open("a") as log:
                log.write(f"tracker {name} failed at {event}:\n{traceback.format_exc()}\n")
        except OSError:
            pass  # the report above still reaches the caller
        on_failure(name, error)
