"""OpenAI's fine-tuning API on a real `ogx run`, through the official openai client: a DPO job from upload to a
fine-tuned model, its events, checkpoints and result file, and that model trained again by the next job."""

import csv
import io
from pathlib import Path

import openai
import pytest

from helpers import dpo, openai_preferences, step_losses, upload, wait_final


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI, preference_rows: list[dict[str, str]]) -> str:
    return upload(client, openai_preferences(preference_rows))


@pytest.fixture(scope="module")
def finished_job(client: openai.OpenAI, tiny_model: Path, training_file: str) -> str:
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=training_file,
        method=dpo(batch_size=4, n_epochs=1, beta="auto"),
        seed=7,
        suffix="arith",
        metadata={"team": "ogx-tests"},
    )
    assert job.object == "fine_tuning.job" and job.status == "queued" and job.id.startswith("ftjob-")
    assert wait_final(client, job.id).status == "succeeded"
    return job.id


@pytest.mark.slow
def test_a_dpo_job_reports_every_openai_field_with_auto_resolved(
    client: openai.OpenAI, finished_job: str, tiny_model: Path, training_file: str
) -> None:
    job = client.fine_tuning.jobs.retrieve(finished_job)
    assert job.model == str(tiny_model) and job.training_file == training_file and job.validation_file is None
    assert job.seed == 7 and job.metadata == {"team": "ogx-tests"} and job.user_provided_suffix == "arith"
    assert job.fine_tuned_model == f"ft:{tiny_model.name}:arith:{finished_job}"
    assert job.finished_at is not None and job.finished_at >= job.created_at and job.error is None
    assert job.trained_tokens and job.trained_tokens > 0 and job.estimated_finish is None
    assert job.method is not None and job.method.type == "dpo" and job.method.dpo is not None
    hyperparameters = job.method.dpo.hyperparameters
    assert hyperparameters is not None
    assert (hyperparameters.beta, hyperparameters.batch_size, hyperparameters.n_epochs) == (0.1, 4, 1)  # beta: dpo_beta
    assert hyperparameters.learning_rate_multiplier == 5000


@pytest.mark.slow
def test_events_list_newest_first_with_per_step_losses_and_page_with_after(
    client: openai.OpenAI, finished_job: str
) -> None:
    events = client.fine_tuning.jobs.list_events(finished_job, limit=100).data
    assert events[0].message.startswith("New fine-tuned model created") and events[-1].message.startswith("Created")
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    losses = step_losses(client, finished_job)
    assert sorted(losses) == [1, 2, 3] and losses[3] < losses[1]  # 12 pairs, batch 4: 3 steps; DPO lowers the loss
    first = client.fine_tuning.jobs.list_events(finished_job, limit=2)
    assert first.has_more and len(first.data) == 2
    second = client.fine_tuning.jobs.list_events(finished_job, limit=2, after=first.data[-1].id)
    assert [e.id for e in second.data] == [e.id for e in events[2:4]]


@pytest.mark.slow
def test_checkpoints_and_the_result_file_hold_what_the_job_trained(client: openai.OpenAI, finished_job: str) -> None:
    checkpoints = client.fine_tuning.jobs.checkpoints.list(finished_job).data
    assert {c.fine_tuned_model_checkpoint for c in checkpoints} == {
        f"{client.fine_tuning.jobs.retrieve(finished_job).fine_tuned_model}",
        f"{client.fine_tuning.jobs.retrieve(finished_job).fine_tuned_model}:ckpt-step-3",
    }
    assert all(c.object == "fine_tuning.job.checkpoint" and c.step_number == 3 for c in checkpoints)
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    [result_file] = client.fine_tuning.jobs.retrieve(finished_job).result_files
    assert client.files.retrieve(result_file).purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_file).text)))
    losses = step_losses(client, finished_job)
    assert [(int(r["step"]), float(r["train_loss"])) for r in rows] == sorted(losses.items())


@pytest.mark.slow
def test_the_fine_tuned_model_is_the_next_jobs_model_and_lists_filter_by_metadata(
    client: openai.OpenAI, finished_job: str, training_file: str
) -> None:
    first = client.fine_tuning.jobs.retrieve(finished_job)
    assert first.fine_tuned_model is not None
    second = client.fine_tuning.jobs.create(
        model=first.fine_tuned_model,
        training_file=training_file,
        method=dpo(batch_size=4, n_epochs=1, learning_rate_multiplier=1),
        seed=7,  # the first job's: the same first batch
        metadata={"team": "ogx-tests", "round": "2"},
    )
    assert wait_final(client, second.id).status == "succeeded"
    assert second.model == first.fine_tuned_model

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
    page = client.fine_tuning.jobs.list(limit=1, metadata={"team": "ogx-tests"})
    assert [job.id for job in page.data] == [second.id] and page.has_more
    assert [job.id for job in client.fine_tuning.jobs.list(after=second.id, metadata={"team": "ogx-tests"})] == [
        finished_job
    ]
