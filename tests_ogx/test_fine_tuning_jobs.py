"""OpenAI's fine-tuning API on a real `ogx run`, through the official openai client: the README's DPO job from
upload to a fine-tuned model, its events, checkpoints and result file, and that model trained again by the next
job."""

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import REPO_ROOT
from helpers import dpo, step_losses, upload, wait_final


@pytest.fixture(scope="module")
def finished_job(server: StackServer, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The README's "Quickstart: on OGX" example, run as written on the tiny model; the id of the job it trained."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Quickstart: on OGX\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    script = tmp_path_factory.mktemp("readme") / "example.py"
    script.write_text(example)
    env = {**os.environ, "OGX_URL": f"{server.base_url}/v1", "MODEL": str(tiny_model)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    status, job_id, fine_tuned_model = result.stdout.splitlines()[0].split()
    assert status == "succeeded" and fine_tuned_model == f"ft:{tiny_model.name}:short-answers:{job_id}"
    assert "The job has successfully completed" in result.stdout
    return job_id


@pytest.mark.slow
def test_the_readme_job_reports_every_openai_field_with_auto_resolved(
    client: openai.OpenAI, finished_job: str, tiny_model: Path
) -> None:
    job = client.fine_tuning.jobs.retrieve(finished_job)
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-") and job.status == "succeeded"
    assert job.model == str(tiny_model) and client.files.retrieve(job.training_file).purpose == "fine-tune"
    assert job.seed == 7 and job.metadata == {"project": "readme"} and job.user_provided_suffix == "short-answers"
    assert job.validation_file is None and job.organization_id
    assert job.finished_at is not None and job.finished_at >= job.created_at and job.error is None
    assert job.trained_tokens and job.trained_tokens > 0 and job.estimated_finish is None
    assert job.method is not None and job.method.type == "dpo" and job.method.dpo is not None
    hyperparameters = job.method.dpo.hyperparameters
    assert hyperparameters is not None
    assert (hyperparameters.beta, hyperparameters.batch_size, hyperparameters.n_epochs) == (0.1, 4, 2)  # beta: dpo_beta
    assert hyperparameters.learning_rate_multiplier == 50


@pytest.mark.slow
def test_events_list_newest_first_with_per_step_losses_and_page_with_after(
    client: openai.OpenAI, finished_job: str
) -> None:
    events = client.fine_tuning.jobs.list_events(finished_job, limit=100).data
    assert events[0].message.startswith("New fine-tuned model created") and events[-1].message.startswith("Created")
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    losses = step_losses(client, finished_job)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]  # 8 pairs, batch 4, 2 epochs; DPO lowers it
    first = client.fine_tuning.jobs.list_events(finished_job, limit=2)
    assert first.has_more and len(first.data) == 2
    second = client.fine_tuning.jobs.list_events(finished_job, limit=2, after=first.data[-1].id)
    assert [e.id for e in second.data] == [e.id for e in events[2:4]]


@pytest.mark.slow
def test_events_listed_again_are_not_read_again_from_the_jobs_events_file(
    client: openai.OpenAI, finished_job: str, server: StackServer
) -> None:
    listed = [(e.id, e.message) for e in client.fine_tuning.jobs.list_events(finished_job, limit=100).data]
    events_file = Path(server.env["TRL_OGX_DIR"]) / "jobs" / finished_job / EVENTS_FILE
    written = events_file.read_bytes()
    try:
        events_file.write_bytes(b" " * (len(written) - 1) + b"\n")  # the lines already read, blanked in place
        again = [(e.id, e.message) for e in client.fine_tuning.jobs.list_events(finished_job, limit=100).data]
    finally:
        events_file.write_bytes(written)
    assert again == listed


@pytest.mark.slow
def test_checkpoints_and_the_result_file_hold_what_the_job_trained(client: openai.OpenAI, finished_job: str) -> None:
    checkpoints = client.fine_tuning.jobs.checkpoints.list(finished_job).data
    model = client.fine_tuning.jobs.retrieve(finished_job).fine_tuned_model
    names = [c.fine_tuned_model_checkpoint for c in checkpoints]
    assert names == [model, f"{model}:ckpt-step-4", f"{model}:ckpt-step-2"]  # newest first: final, epoch 2, epoch 1
    assert all(c.object == "fine_tuning.job.checkpoint" and c.fine_tuning_job_id == finished_job for c in checkpoints)
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    [result_file] = client.fine_tuning.jobs.retrieve(finished_job).result_files
    assert client.files.retrieve(result_file).purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_file).text)))
    losses = step_losses(client, finished_job)
    assert [(int(r["step"]), float(r["train_loss"])) for r in rows] == sorted(losses.items())


@pytest.mark.slow
def test_the_fine_tuned_model_trains_on_in_a_next_job_with_a_validation_file_and_lists_filter_by_metadata(
    client: openai.OpenAI, finished_job: str
) -> None:
    first = client.fine_tuning.jobs.retrieve(finished_job)
    assert first.fine_tuned_model is not None
    second = client.fine_tuning.jobs.create(
        model=first.fine_tuned_model,
        training_file=first.training_file,
        validation_file=first.training_file,
        method=dpo(batch_size=4, n_epochs=1, learning_rate_multiplier=1),
        seed=7,  # the first job's: the same first batch
        extra_body={"trl": {"max_seq_length": 256}},
        metadata={"project": "readme", "round": "2"},
    )
    assert wait_final(client, second.id).status == "succeeded"
    assert second.model == first.fine_tuned_model and second.validation_file == first.training_file
    [final, epoch] = client.fine_tuning.jobs.checkpoints.list(second.id).data
    assert epoch.metrics.valid_loss is not None and epoch.metrics.valid_loss == final.metrics.valid_loss
    [result_file] = client.fine_tuning.jobs.retrieve(second.id).result_files
    last_step = list(csv.DictReader(io.StringIO(client.files.content(result_file).text)))[-1]
    assert float(last_step["valid_loss"]) == epoch.metrics.valid_loss  # evaluated once, at the end of the epoch

    # It starts from the first job's weights: on the same first batch, its model already prefers the chosen answers
    # by a wider log-prob margin than the base model did.
    def first_margin(job_id: str) -> float:
        newest_first = [e.data for e in client.fine_tuning.jobs.list_events(job_id, limit=1000) if e.type == "metrics"]
        step_1 = newest_first[-1]
        return step_1["logps/chosen"] - step_1["logps/rejected"]

    assert first_margin(second.id) > first_margin(finished_job) + 0.1

    listed = client.fine_tuning.jobs.list(limit=100).data
    ids = [job.id for job in listed]
    assert ids.index(second.id) < ids.index(finished_job)  # newest first
    assert [job.id for job in client.fine_tuning.jobs.list(metadata={"round": "2"})] == [second.id]
    page = client.fine_tuning.jobs.list(limit=1, metadata={"project": "readme"})
    assert [job.id for job in page.data] == [second.id] and page.has_more
    assert [job.id for job in client.fine_tuning.jobs.list(after=second.id, metadata={"project": "readme"})] == [
        finished_job
    ]


@pytest.mark.slow
def test_a_supervised_job_trains_on_openai_chat_examples_and_its_model_goes_on_to_dpo(
    client: openai.OpenAI, tiny_model: Path, finished_job: str
) -> None:
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a + b}."},
            ]
        }
        for a, b in [(2, 3), (4, 1), (6, 2), (3, 3), (7, 1), (5, 4), (2, 2), (9, 0)]
    ]
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, chats),
        hyperparameters={"batch_size": 4, "n_epochs": 2, "learning_rate_multiplier": 5000},  # OpenAI's older form
    )
    assert job.method is not None and job.method.type == "supervised"  # OpenAI's default method
    done = wait_final(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method is not None and done.method.supervised is not None
    assert done.method.supervised.hyperparameters.model_dump() == done.hyperparameters.model_dump()
    losses = step_losses(client, job.id)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    [result_file] = done.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_file).text)))
    assert all(row["train_accuracy"] for row in rows)  # SFT's mean token accuracy

    # The usual path: SFT, then DPO from the SFT model.
    readme_job = client.fine_tuning.jobs.retrieve(finished_job)
    dpo_job = client.fine_tuning.jobs.create(
        model=done.fine_tuned_model, training_file=readme_job.training_file, method=dpo(n_epochs=1)
    )
    assert wait_final(client, dpo_job.id).status == "succeeded"
