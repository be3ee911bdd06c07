"""`llama-stack-trl`, the installed console script, against a real `llama stack run` server."""

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_stack_client import LlamaStackClient
from PIL import Image

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo_request, register_rows, unique, wait_for

CLI = Path(sys.executable).with_name("llama-stack-trl")
DPO_PANELS = ["Loss", "Reward margin", "Preference accuracy", "Learning rate", "Throughput", "Gradient norm"]


def cli(stack: StackServer, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "--url", stack.base_url, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def write_train_yaml(directory: Path, model: Path, rows: list[dict[str, Any]], **config: Any) -> Path:
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    (directory / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[16:]))
    path = directory / "dpo.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": str(model),
                "dataset": "train.jsonl",
                "validation_dataset": "heldout.jsonl",
                "algorithm_config": {"beta": 0.1, "loss_type": "sigmoid"},
                "training_config": {
                    "n_epochs": 2,
                    "max_steps_per_epoch": 2,
                    "data_config": {"batch_size": 4, "shuffle": True},
                    "optimizer_config": {
                        "optimizer_type": "adamw",
                        "lr": 5e-3,
                        "weight_decay": 0.0,
                        "num_warmup_steps": 0,
                    },
                },
                **config,
            }
        )
    )
    return path


def test_the_cli_imports_neither_the_training_libraries_nor_the_server_nor_openai() -> None:
    code = "import sys, llama_stack_provider_trl.cli.main, llama_stack_provider_trl.cli.stack; print(*sys.modules)"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert "llama_stack_client" in loaded
    assert not loaded & {"torch", "transformers", "trl", "datasets", "llama_stack", "llama_stack_api", "matplotlib"}
    assert "openai" not in loaded  # the OGX part's client (--ogx): not needed to talk to Llama Stack 0.6.1


def test_pause_is_ogxs_and_says_so_as_a_usage_error() -> None:
    result = subprocess.run([str(CLI), "pause", "job-1"], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert "error: pause is OGX's (--ogx): Llama Stack 0.6.1's post_training API has none" in result.stderr


def test_train_from_a_yaml_watches_the_job_to_completion_and_shows_its_logs_artifacts_and_curves(
    stack: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    job_uuid = unique("cli-train")
    config = write_train_yaml(tmp_path, tiny_model, preference_rows, job_uuid=job_uuid)

    trained = cli(stack, "train", str(config), "--watch", "--interval", "0.3")

    assert trained.returncode == 0, trained.stdout + trained.stderr
    lines = trained.stdout.splitlines()
    assert lines[0] == job_uuid
    assert any("step 4/4 epoch 2/2 · loss " in line for line in lines), lines
    assert f"{job_uuid} completed after" in trained.stdout
    assert f"checkpoint {job_uuid}-final:" in trained.stdout

    status = json.loads(cli(stack, "status", job_uuid, "--json").stdout)
    res = status["resources_allocated"]
    assert status["status"] == "completed" and res["eval_rows"] == 8
    assert res["logs"] and res["log_lines"] >= len(res["logs"])
    assert res["estimated_finish"] is None  # the job has finished

    artifacts = cli(stack, "artifacts", job_uuid)
    assert artifacts.returncode == 0
    assert f"{job_uuid}-final  epoch 2  " in artifacts.stdout and "validation_loss" in artifacts.stdout
    curves = Path(res["curves"])
    assert f"curves  {curves}" in artifacts.stdout
    with Image.open(curves) as picture:
        assert picture.format == "PNG" and picture.width >= 1000
        assert picture.text["panels"].split(", ") == DPO_PANELS
        assert picture.text["validation"] == "eval_loss, eval_rewards/margins, eval_rewards/accuracies"

    logs = cli(stack, "logs", job_uuid)
    assert logs.returncode == 0
    assert logs.stdout.splitlines()[-len(res["logs"]) :] == res["logs"]

    listed = cli(stack, "jobs")
    assert any(line.split()[:4] == [job_uuid, "completed", "finished", "4/4"] for line in listed.stdout.splitlines())


def test_watch_of_a_cancelled_job_exits_4_and_logs_follow_it(
    stack: StackServer, client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows * 20)
    job_uuid = unique("cli-cancel")
    client.alpha.post_training.preference_optimize(
        **dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=100, max_steps_per_epoch=None, batch_size=1)
    )
    command = [str(CLI), "--url", stack.base_url]
    with (
        subprocess.Popen([*command, "watch", job_uuid, "--interval", "0.3"], stdout=subprocess.PIPE, text=True) as w,
        subprocess.Popen(
            [*command, "logs", job_uuid, "-f", "--interval", "0.3"], stdout=subprocess.PIPE, text=True
        ) as f,
    ):
        running = wait_for(client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 3)
        finish = running.resources_allocated["estimated_finish"]
        assert finish is not None and datetime.fromisoformat(finish) > running.started_at

        cancelled = cli(stack, "cancel", job_uuid)

        assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{job_uuid}: cancelled"
        watched, followed = w.communicate(timeout=60)[0], f.communicate(timeout=60)[0]
    assert w.returncode == 4, watched
    assert f"{job_uuid} cancelled after" in watched
    assert "ETA " in watched  # while it ran, the progress lines said when it would finish
    assert f.returncode == 0
    final = client.alpha.post_training.job.status(job_uuid=job_uuid).resources_allocated
    assert followed.splitlines()[-len(final["logs"]) :] == final["logs"]  # followed to the log's last line
    assert "'loss'" in followed  # Trainer prints each step's logged metrics into the job's log
    # a cancelled job's picture shows how far it got (one epoch of 480 steps: drawn only because it ended)
    drawn = wait_for(client, job_uuid, lambda s: s.resources_allocated["curves"], timeout_s=30)
    with Image.open(drawn.resources_allocated["curves"]) as picture:
        assert picture.text["panels"].startswith("Loss, Reward margin")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "no-such-job"], "Training job 'no-such-job' not found"),
        (["cancel", "no-such-job"], "not found"),
    ],
)
def test_server_errors_print_the_servers_message_without_a_traceback(
    stack: StackServer, args: list[str], message: str
) -> None:
    result = cli(stack, *args)

    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr and "(HTTP 404)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"algorithm_config": {"beta": -1.0}}, "algorithm_config.beta"),  # the provider's own check
        (  # the API's schema: the field's path, not a dict
            {
                "training_config": {
                    "n_epochs": 1,
                    "data_config": {"batch_size": 4, "shuffle": True},
                    "optimizer_config": {},
                }
            },
            "training_config.optimizer_config.lr: Field required",
        ),
    ],
)
def test_train_refused_by_the_server_prints_the_field_it_names(
    stack: StackServer,
    tiny_model: Path,
    preference_rows: list[dict[str, str]],
    tmp_path: Path,
    config: dict[str, Any],
    message: str,
) -> None:
    result = cli(stack, "train", str(write_train_yaml(tmp_path, tiny_model, preference_rows, **config)))

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.rstrip().endswith("(HTTP 400)")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_train_file_is_named_before_anything_reaches_the_server(stack: StackServer, tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model: m\ndataset: d.jsonl\nalgorithm_config: {beta: 0.1}\nepochs: 3\n")

    result = cli(stack, "train", str(config))

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {config}: unknown key 'epochs'; the keys are: method, model")


def test_an_unreachable_server_is_said_in_one_line() -> None:
    result = subprocess.run(
        [str(CLI), "--url", "http://127.0.0.1:9", "jobs"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the Llama Stack server at http://127.0.0.1:9")
    assert len(result.stderr.splitlines()) == 1
