"""End to end: llama-stack-client -> `llama stack run run.yaml` -> a TRL DPO process -> a checkpoint."""

from pathlib import Path

import torch
from llama_stack_client import LlamaStackClient
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_stack_provider_trl.demo.toy_data import as_conversations

from helpers import dpo_request, process_gone, register_rows, unique, wait_final, wait_for

DPO_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def test_dpo_job_completes_with_a_checkpoint_that_loads_with_changed_weights(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows)
    job_uuid = unique("dpo")

    job = client.alpha.post_training.preference_optimize(
        **dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=2, max_steps_per_epoch=3)
    )

    assert job.job_uuid == job_uuid
    first = client.alpha.post_training.job.status(job_uuid=job_uuid)
    assert first.status in ("scheduled", "in_progress")  # the request returned before training ran
    assert first.scheduled_at is not None and first.completed_at is None

    status = wait_final(client, job_uuid)
    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert status.scheduled_at <= status.started_at <= status.completed_at
    # max_steps_per_epoch is per epoch: 2 epochs x 3 steps
    assert (resources["step"], resources["total_steps"], resources["epoch"]) == (6, 6, 2)
    assert set(DPO_METRICS) <= set(resources["metrics"])
    assert resources["metrics"]["rewards/margins"] > 0  # the policy now prefers chosen over rejected
    assert resources["device"] == "cpu" and resources["precision"] == "fp32"
    assert resources["reference_strategy"] == "frozen_copy"
    assert resources["tokens_per_s"] > 0 and 0 <= resources["padding_share"] < 1
    assert resources["mfu"] is None  # no known peak FLOP/s on a CPU
    assert resources["peak_memory_gib"] > 0
    assert Path(resources["log_path"]).is_file()

    # one checkpoint per epoch, then the final model; no validation set, so no training_metrics
    assert [c.identifier for c in status.checkpoints] == [
        f"{job_uuid}-epoch-1",
        f"{job_uuid}-epoch-2",
        f"{job_uuid}-final",
    ]
    checkpoint = status.checkpoints[-1]
    assert checkpoint.epoch == 2 and checkpoint.post_training_job_id == job_uuid
    assert checkpoint.training_metrics is None
    artifacts = client.alpha.post_training.job.artifacts(job_uuid=job_uuid)
    assert [c.path for c in artifacts.checkpoints] == [c.path for c in status.checkpoints]
    assert job_uuid in {j.job_uuid for j in client.alpha.post_training.job.list()}

    trained = AutoModelForCausalLM.from_pretrained(checkpoint.path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed, "no weight changed"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    assert tokenizer.chat_template and len(tokenizer) == base.config.vocab_size


def test_running_job_shows_progress_and_queues_and_cancels(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    rows = preference_rows * 20  # an epoch of 480 steps: no epoch checkpoint before the cancel
    dataset_id = register_rows(client, rows)
    long_run = {"n_epochs": 100, "max_steps_per_epoch": None, "batch_size": 1, "lr": 1e-4}
    running_uuid, queued_uuid = unique("long"), unique("queued")
    client.alpha.post_training.preference_optimize(**dpo_request(running_uuid, tiny_model, dataset_id, **long_run))
    client.alpha.post_training.preference_optimize(**dpo_request(queued_uuid, tiny_model, dataset_id, **long_run))

    running = wait_for(client, running_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 2)
    resources = running.resources_allocated
    assert running.status == "in_progress" and running.started_at is not None
    assert resources["phase"] == "training"
    assert 2 <= resources["step"] < resources["total_steps"] == 100 * len(rows)
    assert set(DPO_METRICS) <= set(resources["metrics"])

    queued = client.alpha.post_training.job.status(job_uuid=queued_uuid)  # max_concurrent_jobs is 1
    assert queued.status == "scheduled" and queued.started_at is None
    client.alpha.post_training.job.cancel(job_uuid=queued_uuid)
    queued = client.alpha.post_training.job.status(job_uuid=queued_uuid)
    assert queued.status == "cancelled" and queued.started_at is None

    client.alpha.post_training.job.cancel(job_uuid=running_uuid)
    cancelled = wait_final(client, running_uuid, timeout_s=60)
    assert cancelled.status == "cancelled"
    assert process_gone(resources["pid"])
    assert cancelled.checkpoints == []


def test_failing_training_process_is_reported_with_its_error(
    client: LlamaStackClient, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows)
    job_uuid = unique("bad-model")
    client.alpha.post_training.preference_optimize(**dpo_request(job_uuid, "no-such-org/no-such-model", dataset_id))

    status = wait_final(client, job_uuid)

    assert status.status == "failed"
    error = status.resources_allocated["error"]
    assert "no-such-org/no-such-model" in error
    assert "last lines of" in error  # the log tail comes with it
    assert status.checkpoints == []


def test_packed_lora_job_on_conversational_rows_with_a_validation_set_reports_eval_metrics_per_checkpoint(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    train = register_rows(client, as_conversations(preference_rows[:16]))
    validation = register_rows(client, as_conversations(preference_rows[16:]))
    job_uuid = unique("lora")
    client.alpha.post_training.preference_optimize(
        **dpo_request(
            job_uuid,
            tiny_model,
            train,
            n_epochs=2,
            max_steps_per_epoch=2,
            lr=5e-2,
            data_format="dialog",
            validation_dataset_id=validation,
            hyperparam_search_config={
                "use_lora": True,
                "lora_rank": 4,
                "merge_adapter": True,
                "save_total_limit": 1,
                "padding_free": True,
            },
        )
    )
    status = wait_final(client, job_uuid)
    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert resources["padding_free"] is True and resources["padding_share"] == 0.0
    assert resources["reference_strategy"] == "adapters_disabled"
    assert resources["master_weights"] is None  # LoRA: the adapters train in fp32, the base never changes
    assert resources["lora"]["rank"] == 4 and resources["eval_rows"] == 8
    assert "eval_loss" in resources["eval_metrics"]

    artifacts = client.alpha.post_training.job.artifacts(job_uuid=job_uuid).checkpoints
    # save_total_limit 1: the epoch-1 checkpoint was deleted once epoch 2 saved, and left the list
    assert [c.identifier for c in artifacts] == [f"{job_uuid}-epoch-2", f"{job_uuid}-final", f"{job_uuid}-final-merged"]
    assert [c.epoch for c in artifacts] == [2, 2, 2]
    assert all(Path(c.path).is_dir() for c in artifacts)
    for checkpoint in artifacts:
        metrics = checkpoint.training_metrics
        assert metrics is not None and metrics.epoch == checkpoint.epoch
        assert metrics.validation_loss > 0 and metrics.perplexity > 1 and metrics.train_loss > 0
    assert AutoPeftModelForCausalLM.from_pretrained(artifacts[1].path) is not None
    assert AutoModelForCausalLM.from_pretrained(artifacts[2].path).config.vocab_size > 0


def test_normalize_rewards_trains_the_requested_sigmoid_loss_as_sigmoid_norm(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows[:8])
    job_uuid = unique("normalized")
    request = dpo_request(job_uuid, tiny_model, dataset_id, hyperparam_search_config={"normalize_rewards": True})
    assert request["algorithm_config"]["loss_type"] == "sigmoid"
    client.alpha.post_training.preference_optimize(**request)
    status = wait_final(client, job_uuid)
    assert status.status == "completed", status.resources_allocated["error"]
    assert status.resources_allocated["loss_type"] == ["sigmoid_norm"]
    assert set(DPO_METRICS) <= set(status.resources_allocated["metrics"])
