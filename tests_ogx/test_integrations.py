"""OpenAI's `integrations` on a real `ogx run`, through the official openai client: OpenAI's W&B integration
(recorded offline) and this provider's TensorBoard record the job's losses under the name and tags asked for, and
the job object lists the integrations it was created with."""

from pathlib import Path

import openai

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo, openai_preferences, step_losses, tensorboard_losses, upload, wait_final, wandb_offline_run


def test_wandb_and_tensorboard_integrations_record_the_jobs_losses_under_the_name_and_tags_asked_for(
    client: openai.OpenAI, server: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    integrations = [
        {"type": "wandb", "wandb": {"project": "ogx-dpo", "name": "first try", "tags": ["dpo", "tiny"]}},
        {"type": "tensorboard"},
    ]
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(client, openai_preferences(preference_rows)),
        method=dpo(),
        integrations=integrations,  # type: ignore[arg-type]  # the SDK's type knows only OpenAI's wandb
    )

    finished = wait_final(client, job.id)

    assert finished.status == "succeeded", finished.error
    assert [i.model_dump(exclude_none=True) for i in finished.integrations or []] == integrations
    losses = [loss for _, loss in sorted(step_losses(client, job.id).items())]
    assert len(losses) >= 2
    job_dir = Path(server.env["TRL_OGX_DIR"]) / "jobs" / job.id
    assert tensorboard_losses(job_dir) == losses
    run, wandb_losses = wandb_offline_run(job_dir)
    assert (run.display_name, run.project, list(run.tags)) == ("first try", "ogx-dpo", ["dpo", "tiny"])
    assert wandb_losses == losses
