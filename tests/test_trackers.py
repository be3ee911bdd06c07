"""Experiment trackers through logger_config, on a real server: TensorBoard, MLflow and W&B (offline) record the
job's metrics; a tracker that fails mid-job is turned off and the training completes; a tracking server's answer
stays out of what a caller reads."""

import http.server
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from llama_stack_client import LlamaStackClient
from mlflow import MlflowClient

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE

from helpers import dpo_request, events_of, register_rows, run_recipe, tensorboard_losses, unique, wait_final, wait_for


def logged_losses(job_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text().splitlines()]
    return [e["metrics"]["loss"] for e in events if e["event"] == "metrics"]


def test_tensorboard_mlflow_and_wandb_each_record_the_jobs_loss(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows)
    job_uuid = unique("trackers")
    logger_config = {"tensorboard": {}, "mlflow": {"experiment_name": "tracker-test"}, "wandb": {"project": "p"}}
    client.alpha.post_training.preference_optimize(
        **{
            **dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=2, max_steps_per_epoch=2),
            "logger_config": logger_config,
        }
    )

    status = wait_final(client, job_uuid)

    res = status.resources_allocated
    assert status.status == "completed", res["error"]
    assert {name: tracker["error"] for name, tracker in res["trackers"].items()} == dict.fromkeys(logger_config)
    job_dir = Path(res["job_dir"])
    losses = logged_losses(job_dir)
    assert len(losses) == 4
    assert tensorboard_losses(job_dir) == losses  # tensorboard --logdir <output_dir> shows every job's curves

    tracking_uri = res["trackers"]["mlflow"]["run"].split(" ")[0]
    mlflow = MlflowClient(tracking_uri)
    [run] = mlflow.search_runs([mlflow.get_experiment_by_name("tracker-test").experiment_id])
    assert run.info.run_name == job_uuid and run.info.status == "FINISHED"
    assert [m.value for m in sorted(mlflow.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)] == losses

    [wandb_run] = (job_dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("run-*.wandb"))  # `wandb sync` uploads it later


def test_a_tracker_failing_mid_job_is_turned_off_and_the_training_completes(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows)
    job_uuid = unique("tracker-fails")
    client.alpha.post_training.preference_optimize(
        **{
            **dpo_request(job_uuid, tiny_model, dataset_id, max_steps_per_epoch=8, batch_size=1),
            "logger_config": {"mlflow": {}, "tensorboard": {}},
        }
    )
    running = wait_for(
        client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 1 or s.status != "in_progress"
    )
    job_dir = Path(running.resources_allocated["job_dir"])

    # Another process takes the MLflow store's write lock (a migration, a UI, a backup) and keeps it
    store = sqlite3.connect(job_dir / "mlflow.db", isolation_level=None)
    store.execute("BEGIN EXCLUSIVE")
    try:
        failed = wait_for(client, job_uuid, lambda s: s.resources_allocated["trackers"]["mlflow"]["error"])
    finally:
        store.close()
    status = wait_final(client, job_uuid)

    res = status.resources_allocated
    assert status.status == "completed", res["error"]
    assert "locked" in failed.resources_allocated["trackers"]["mlflow"]["error"]
    assert res["trackers"]["tensorboard"]["error"] is None
    assert tensorboard_losses(job_dir) == logged_losses(job_dir)  # the other tracker missed nothing
    assert "tracker mlflow failed and is off for the rest of this job" in (job_dir / "train.log").read_text()


class _Answers(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers every call with an error whose body holds what its network serves."""

    def _answer(self) -> None:
        body = SERVED_SECRET.encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


SERVED_SECRET = "instance-role-credentials-AKIAEXAMPLE"


def test_a_tracking_server_that_fails_is_reported_without_its_answer(
    tmp_path: Path,
    tiny_model: Path,
    preference_rows: list[dict[str, str]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        events = run_recipe(
            tmp_path,
            tiny_model,
            preference_rows[:4],
            max_steps_per_epoch=1,
            trackers={"mlflow": {"tracking_uri": uri, "experiment_name": "e"}},
        )
    finally:
        server.shutdown()

    [failed] = events_of(events, "tracker_failed")
    assert failed["tracker"] == "mlflow" and "MlflowException" in failed["error"]
    assert SERVED_SECRET not in failed["error"]
    assert SERVED_SECRET not in capfd.readouterr().err  # the job's log, which status shows
    assert SERVED_SECRET in (tmp_path / "job" / "trackers.log").read_text()  # for the operator
    assert events[-1]["event"] == "completed"
