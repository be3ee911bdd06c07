"""Reinforcement fine-tuning (OpenAI's method.type reinforcement) on a real `ogx run` through the openai client: a
grader's mean reward rises on the tiny model, on one process and on two (DDP); the job object returns its method
resolved, the events, checkpoints and result file carry the rewards; a running job pauses, resumes and cancels like
any other; bad requests are 400s naming the parameter."""

import csv
import io
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
from llama_stack_provider_trl.demo.toy_data import HOLDS_TOKEN_GRADER, token_prompts

from conftest import REPO_ROOT
from helpers import upload, wait_final, wait_for

# The task: answers holding the line's token ("5"), which GRPO teaches the tiny model within a few dozen steps
PROMPTS = token_prompts(8)
GRADER = HOLDS_TOKEN_GRADER
HP = "method.reinforcement.hyperparameters"
SETTINGS = {"num_generations": 8, "max_completion_length": 16, "save_every_epoch": False}


def reinforcement(grader: dict[str, Any] = GRADER, **hyperparameters: Any) -> dict[str, Any]:
    """method= for a reinforcement job; the multiplier scales the provider's base learning rate (1e-6)."""
    given = {"batch_size": 2, "n_epochs": 1, "learning_rate_multiplier": 5000, **hyperparameters}
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": given}}


def step_rewards(client: openai.OpenAI, job_id: str) -> dict[int, float]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return {e.data["step"]: e.data["reward"] for e in events if e.type == "metrics"}  # type: ignore[index]


@pytest.fixture(scope="module")
def trained(client: openai.OpenAI, tiny_model: Path) -> str:
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, PROMPTS),
        validation_file=upload(client, PROMPTS[:2]),
        method=reinforcement(n_epochs=8, eval_interval=16, eval_samples=4),
        extra_body={"trl": SETTINGS},
    )
    assert wait_final(client, job.id).status == "succeeded", client.fine_tuning.jobs.retrieve(job.id).error
    return job.id


@pytest.mark.slow
def test_an_rft_job_raises_the_mean_reward_its_grader_gives(client: openai.OpenAI, trained: str) -> None:
    rewards = step_rewards(client, trained)
    assert sorted(rewards) == list(range(1, 33))  # 8 prompts, 2 a step, 8 epochs
    first, last = [rewards[s] for s in range(1, 5)], [rewards[s] for s in range(29, 33)]
    assert sum(last) / 4 > sum(first) / 4 + 0.3, rewards
    messages = [e.message for e in client.fine_tuning.jobs.list_events(trained, limit=1000)]
    assert any(m.startswith("Validation reward at step 16: ") for m in messages)


@pytest.mark.slow
def test_an_rft_job_on_two_ddp_processes_raises_the_mean_reward_and_reports_each_step_once(
    client: openai.OpenAI, server: StackServer, tiny_model: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, PROMPTS),
        method=reinforcement(n_epochs=8),  # each rank takes one prompt of the two a step and its 8 answers
        extra_body={"trl": {**SETTINGS, "num_processes": 2}},
    )
    assert wait_final(client, job.id).status == "succeeded", client.fine_tuning.jobs.retrieve(job.id).error
    job_events = (Path(server.env["TRL_OGX_DIR"]) / "jobs" / job.id / "events.jsonl").read_text().splitlines()
    [setup] = [e for e in map(json.loads, job_events) if e["event"] == "setup_done"]
    assert (setup["world_size"], setup["strategy"]) == (2, "ddp")
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    steps = [e.data["step"] for e in events if e.type == "metrics"]  # type: ignore[index]
    assert sorted(steps) == list(range(1, 33))  # rank 0 reports the step's rewards, gathered from both ranks
    rewards = step_rewards(client, job.id)
    first, last = [rewards[s] for s in range(1, 5)], [rewards[s] for s in range(29, 33)]
    assert sum(last) / 4 > sum(first) / 4 + 0.3, rewards


@pytest.mark.slow
def test_the_rft_job_object_returns_its_method_resolved_with_the_grader(client: openai.OpenAI, trained: str) -> None:
    job = client.fine_tuning.jobs.retrieve(trained)
    assert job.method is not None and job.method.type == "reinforcement" and job.method.reinforcement is not None
    hyperparameters = job.method.reinforcement.hyperparameters
    assert hyperparameters is not None
    assert (hyperparameters.batch_size, hyperparameters.n_epochs, hyperparameters.learning_rate_multiplier) == (
        2,
        8,
        5000,
    )
    assert (hyperparameters.compute_multiplier, hyperparameters.eval_interval, hyperparameters.eval_samples) == (
        1.0,
        16,
        4,
    )
    assert hyperparameters.reasoning_effort == "default"
    assert job.method.reinforcement.grader.to_dict()["graders"]["has_token"]["reference"] == "%{{item.token}}%"


@pytest.mark.slow
def test_checkpoints_and_the_result_file_carry_the_rewards(client: openai.OpenAI, trained: str) -> None:
    [final] = client.fine_tuning.jobs.checkpoints.list(trained).data
    assert final.metrics.to_dict()["train_reward"] > 0.5 and final.metrics.to_dict()["valid_reward"] is not None
    job = client.fine_tuning.jobs.retrieve(trained)
    [result] = job.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result).text)))
    assert [int(row["step"]) for row in rows] == list(range(1, 33))
    assert {"train_reward", "train_reward_std", "completion_length", "clipped_ratio", "valid_reward"} <= set(rows[0])
    assert [row["step"] for row in rows if row["valid_reward"]] == ["16", "32"]
    assert rows[-1]["train_sub_reward_has_token"] and float(rows[-1]["train_reward"]) > 0.5


def _cli(server: StackServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`llama-stack-trl --ogx`, the server's address in $OGX_URL."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("llama-stack-trl")), "--ogx", *args],
        env={**os.environ, "OGX_URL": f"{server.base_url}/v1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_watch_shows_the_reward_in_its_bar(server: StackServer, trained: str) -> None:
    watch = _cli(server, "watch", trained, TTY_COMPATIBLE="1", NO_COLOR="1", COLUMNS="120")
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", watch.stdout)
    assert watch.returncode == 0 and "32/32 steps 100%" in drawn and " · reward " in drawn, drawn


@pytest.mark.slow
def test_an_rft_job_trained_from_an_sft_model_by_the_cli_pauses_resumes_from_its_checkpoint_and_cancels(
    client: openai.OpenAI, server: StackServer, tiny_model: Path, tmp_path: Path
) -> None:
    chats = [{"messages": [*line["messages"], {"role": "assistant", "content": "5."}]} for line in PROMPTS]
    sft = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, chats),
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8, "n_epochs": 1}}},
        extra_body={"trl": {"save_every_epoch": False}},
    )
    sft_model = wait_final(client, sft.id).fine_tuned_model
    assert sft_model is not None
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in PROMPTS))
    method = reinforcement(n_epochs=500, learning_rate_multiplier=1)["reinforcement"]  # 2000 steps: still running
    config = {
        "method": "reinforcement",
        "model": sft_model,  # SFT, then reinforcement from what it learned
        "dataset": "prompts.jsonl",
        "grader": method["grader"],
        "hyperparameters": method["hyperparameters"],
        "trl": SETTINGS,
    }
    (tmp_path / "rft.yaml").write_text(yaml.safe_dump(config))
    train = _cli(server, "train", str(tmp_path / "rft.yaml"))
    assert train.returncode == 0, train.stderr
    job = client.fine_tuning.jobs.retrieve(train.stdout.strip())
    assert job.model == sft_model and job.method is not None and job.method.type == "reinforcement"
    wait_for(client, job.id, lambda _: step_rewards(client, job.id))
    client.fine_tuning.jobs.pause(job.id)
    wait_for(client, job.id, lambda j: j.status == "paused")
    [checkpoint] = client.fine_tuning.jobs.checkpoints.list(job.id).data
    step = checkpoint.step_number
    client.fine_tuning.jobs.resume(job.id)
    wait_for(client, job.id, lambda _: max(step_rewards(client, job.id)) > step)
    assert min(s for s in step_rewards(client, job.id) if s > step) == step + 1
    client.fine_tuning.jobs.cancel(job.id)
    assert wait_final(client, job.id).status == "cancelled"


USER = {"role": "user", "content": "What is 2 plus 3?"}


@pytest.mark.parametrize(
    ("lines", "method", "param", "says"),
    [
        (
            [{"messages": [USER, {"role": "assistant", "content": "5"}]}],
            reinforcement(),
            "training_file",
            "line 1: field 'messages[1].role' is 'assistant'",
        ),
        (
            [{"input": {"messages": [USER]}}],
            reinforcement(),
            "training_file",
            "line 1: field 'messages' is missing (a preference pair",
        ),
        (PROMPTS, reinforcement(compute_multiplier=0), f"{HP}.compute_multiplier", "must be a finite number > 0"),
        (PROMPTS, reinforcement(reasoning_effort="extreme"), f"{HP}.reasoning_effort", "Input should be"),
        (PROMPTS, reinforcement(reasoning_effort="high"), f"{HP}.reasoning_effort", "does not read reasoning_effort"),
        (PROMPTS, reinforcement(batch_size=9), f"{HP}.batch_size", "training_file has 8"),
        (PROMPTS, reinforcement(eval_interval=2), f"{HP}.eval_interval", "give one, or leave it out"),
        (PROMPTS, reinforcement(seeds=1), f"{HP}.seeds", "Extra inputs are not permitted"),
        (PROMPTS, reinforcement(grader={"type": "string_check"}), "method.reinforcement.grader.name", ""),
    ],
)
def test_bad_reinforcement_requests_are_refused_naming_the_parameter(
    client: openai.OpenAI, tiny_model: Path, lines: list[Any], method: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=upload(client, lines), method=method)
    assert error.value.param == param and says in error.value.message


@pytest.mark.slow
def test_the_readme_rft_example_runs_as_written(server: StackServer, tiny_model: Path, tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n### Reinforcement fine-tuning\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {**os.environ, "OGX_URL": f"{server.base_url}/v1", "MODEL": str(tiny_model)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("succeeded ftjob-") and lines[0].endswith(f":trl:{lines[0].split()[1]}")
    assert [line.split()[1] for line in lines[1:]] == ["1", "2", "3", "4"]  # 8 prompts, 4 a step, 2 epochs
