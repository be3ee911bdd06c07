"""`llama-stack-trl --ogx`, the installed console script, against the real `ogx run` of this session: a job trained
from a YAML and watched to the end, a watched job paused, resumed and cancelled, and errors in the server's words."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo, openai_preferences, step_losses, upload, wait_for

CLI = Path(sys.executable).with_name("llama-stack-trl")


def cli(server: StackServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with --ogx, the server's address in $OGX_URL as the README's OGX quickstart has it."""
    return subprocess.run(
        [str(CLI), "--ogx", *args],
        env={**os.environ, "OGX_URL": f"{server.base_url}/v1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_train_yaml(directory: Path, model: Path, rows: list[dict[str, str]], **config: Any) -> Path:
    """OpenAI's preference lines in local JSONL files (8 to train on, 4 held out) and the YAML that names them."""
    lines = openai_preferences(rows)
    (directory / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:8]))
    (directory / "heldout.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[8:]))
    path = directory / "dpo.yaml"
    hyperparameters = {"beta": 0.1, "batch_size": 4, "n_epochs": 2, "learning_rate_multiplier": 5000}
    train = {
        "method": "dpo",
        "model": str(model),
        "dataset": "train.jsonl",
        "validation_dataset": "heldout.jsonl",
        "hyperparameters": hyperparameters,
        "suffix": "cli",
        "metadata": {"from": "cli"},
        "trl": {"max_seq_length": 256},
    }
    path.write_text(yaml.safe_dump({**train, **config}))
    return path


@pytest.mark.slow
def test_train_uploads_the_yamls_jsonl_and_watch_follows_the_dpo_job_to_success(
    server: StackServer,
    client: openai.OpenAI,
    tiny_model: Path,
    preference_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    config = write_train_yaml(tmp_path, tiny_model, preference_rows)

    trained = cli(server, "train", str(config), "--watch", "--interval", "0.3")

    assert trained.returncode == 0, trained.stdout + trained.stderr
    lines = trained.stdout.splitlines()
    job_id = lines[0]
    assert job_id.startswith("ftjob-")
    last_progress = [line for line in lines if line.startswith("succeeded step ")][-1]
    assert last_progress.startswith("succeeded step 4/4 epoch 2/2 · loss ")  # 8 pairs, batch 4, 2 epochs
    assert " · margin " in last_progress and " · acc " in last_progress and " tok/s" in last_progress
    assert any(line.startswith(f"{job_id} succeeded after ") for line in lines), lines
    assert f"  fine_tuned_model: ft:{tiny_model.name}:cli:{job_id}" in lines

    job = client.fine_tuning.jobs.retrieve(job_id)  # what the YAML asked for, with its files uploaded
    assert job.method is not None and job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert (job.method.dpo.hyperparameters.beta, job.method.dpo.hyperparameters.n_epochs) == (0.1, 2)
    assert job.metadata == {"from": "cli"} and job.validation_file is not None
    assert client.files.retrieve(job.training_file).purpose == "fine-tune"
    assert client.files.content(job.training_file).read() == (tmp_path / "train.jsonl").read_bytes()

    status = cli(server, "status", job_id)
    assert status.returncode == 0
    assert status.stdout.startswith(f"{job_id}: succeeded\n  step 4/4  epoch 2/2 · loss ")
    assert "method dpo, batch_size 4, beta 0.1" in status.stdout and "  result_files: file-" in status.stdout
    assert json.loads(cli(server, "status", job_id, "--json").stdout)["status"] == "succeeded"
    listed = cli(server, "jobs").stdout.splitlines()
    assert listed[0].split() == ["JOB", "STATUS", "STEP", "LOSS", "CREATED"]
    assert any(line.split()[:3] == [job_id, "succeeded", "4/4"] for line in listed), listed
    logs = cli(server, "logs", job_id).stdout
    assert "Fine-tuning job started" in logs
    assert logs.rstrip().endswith(f"New fine-tuned model created: {job.fine_tuned_model}")
    artifacts = cli(server, "artifacts", job_id).stdout.splitlines()
    assert artifacts[0].startswith(f"{job.fine_tuned_model}  step 4  train_loss ")
    assert artifacts[-1] == f"result_file  {job.result_files[0]}"
    # on a terminal the same progress is a live bar: it ends full, at the job's step count
    bar = cli(server, "watch", job_id, env={"TTY_COMPATIBLE": "1", "NO_COLOR": "1", "COLUMNS": "100"})
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bar.stdout)  # the bar as the terminal shows it, without codes
    assert bar.returncode == 0 and "4/4 steps 100%" in drawn and "epoch 2/2 · loss " in drawn, drawn


@pytest.mark.slow
def test_a_watched_job_pauses_resumes_and_watch_exits_4_when_it_is_cancelled(
    server: StackServer, client: openai.OpenAI, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    job = client.fine_tuning.jobs.create(  # 600 steps: still running when cancelled
        model=str(tiny_model),
        training_file=upload(client, openai_preferences(preference_rows)),
        method=dpo(batch_size=4, n_epochs=200, learning_rate_multiplier=1),  # type: ignore[arg-type]
        extra_body={"trl": {"save_every_epoch": False}},
    )
    command = [str(CLI), "--ogx", "--url", f"{server.base_url}/v1"]
    with subprocess.Popen([*command, "watch", job.id, "--interval", "0.3"], stdout=subprocess.PIPE, text=True) as w:
        wait_for(client, job.id, lambda _: step_losses(client, job.id))

        paused = cli(server, "pause", job.id)
        assert (paused.returncode, paused.stdout) == (0, f"{job.id}: paused\n"), paused.stderr
        resumed = cli(server, "resume", job.id)
        assert resumed.returncode == 0 and resumed.stdout in (f"{job.id}: queued\n", f"{job.id}: running\n")
        cancelled = cli(server, "cancel", job.id)

        assert (cancelled.returncode, cancelled.stdout) == (0, f"{job.id}: cancelled\n"), cancelled.stderr
        watched = w.communicate(timeout=60)[0]
    assert w.returncode == 4, watched
    assert any(line.startswith("paused step ") for line in watched.splitlines()), watched  # watched through it
    assert f"{job.id} cancelled" in watched
    assert "Fine-tuning job cancelled" in cli(server, "logs", job.id).stdout


@pytest.mark.parametrize("command", ["status", "watch", "cancel", "pause"])
def test_an_unknown_job_prints_the_servers_message_without_a_traceback(server: StackServer, command: str) -> None:
    result = cli(server, command, "ftjob-nope")

    assert result.returncode == 1
    assert result.stderr.startswith("error: no fine-tuning job 'ftjob-nope'; ")
    assert result.stderr.rstrip().endswith("(HTTP 404)")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_train_refused_by_the_server_prints_the_parameter_it_names(
    server: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    hyperparameters = {"batch_size": 4, "learning_rate_multiplier": -1}
    config = write_train_yaml(tmp_path, tiny_model, preference_rows, hyperparameters=hyperparameters)

    result = cli(server, "train", str(config))

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: method.dpo.hyperparameters.learning_rate_multiplier: must be a finite")
    assert result.stderr.rstrip().endswith("(HTTP 400)") and "Traceback" not in result.stderr


def test_a_train_file_with_the_llama_stack_keys_is_named_before_anything_reaches_the_server(
    server: StackServer, tmp_path: Path
) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text("model: m\ndataset: d.jsonl\nalgorithm_config: {beta: 0.1}\n")

    result = cli(server, "train", str(config))

    assert result.returncode == 1
    assert result.stderr == (
        f"error: {config}: unknown key 'algorithm_config'; the keys are: method, model, dataset, validation_dataset, "
        "hyperparameters, grader, suffix, seed, metadata, integrations, trl\n"
    )


def test_the_api_variable_points_the_cli_at_ogx_and_an_unreachable_one_is_said_in_one_line() -> None:
    result = subprocess.run(
        [str(CLI), "--url", "http://127.0.0.1:9", "jobs"],
        env={**os.environ, "LLAMA_STACK_TRL_API": "openai"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the OGX server at http://127.0.0.1:9/v1 (")
    assert len(result.stderr.splitlines()) == 1
