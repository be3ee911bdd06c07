"""End to end: supervised_fine_tune through llama-stack-client and `llama stack run`, then DPO from its checkpoint."""

from pathlib import Path

import pytest
from llama_stack_client import BadRequestError, LlamaStackClient
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM

from llama_stack_provider_trl.demo.requests import sft_request
from llama_stack_provider_trl.demo.toy_data import repeat_instructions

from helpers import answer_loss, dpo_request, register_rows, unique, wait_final

ROWS = repeat_instructions(40, seed=1)
# The upstream Llama Stack integration test's LoRA config
UPSTREAM_LORA = {
    "type": "LoRA",
    "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "apply_lora_to_output": False,
    "rank": 8,
    "alpha": 16,
}


def test_the_upstream_lora_call_trains_one_step_then_dpo_starts_from_its_adapter(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, ROWS[:8])
    sft_uuid = unique("sft")
    client.alpha.post_training.supervised_fine_tune(
        **sft_request(
            sft_uuid,
            tiny_model,
            dataset_id,
            algorithm_config=UPSTREAM_LORA,
            batch_size=1,
            max_steps_per_epoch=1,
            lr=1e-4,
            gradient_accumulation_steps=1,
        ),
        checkpoint_dir=None,
    )
    status = wait_final(client, sft_uuid)
    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert (resources["algorithm"], resources["step"], resources["loss_on"]) == ("sft", 1, "completion")
    # torchtune's output_proj is Llama's o_proj; apply_lora_to_mlp adds the MLP's linear layers
    assert resources["lora"]["target_modules"] == ["q_proj", "v_proj", "o_proj", "down_proj", "gate_proj", "up_proj"]
    assert {"loss", "mean_token_accuracy"} <= set(resources["metrics"])
    paths = {c.identifier: c.path for c in status.checkpoints}
    assert list(paths) == [f"{sft_uuid}-epoch-1", f"{sft_uuid}-final", f"{sft_uuid}-final-merged"]
    AutoPeftModelForCausalLM.from_pretrained(paths[f"{sft_uuid}-final"])
    AutoModelForCausalLM.from_pretrained(paths[f"{sft_uuid}-final-merged"])

    # DPO from the SFT adapter, named as the artifacts list names it: merged into its base, then trained
    preferences = register_rows(client, preference_rows)
    dpo_uuid = unique("dpo")
    client.alpha.post_training.preference_optimize(
        **dpo_request(dpo_uuid, f"{sft_uuid}-final", preferences, max_steps_per_epoch=1)
    )
    status = wait_final(client, dpo_uuid)
    assert status.status == "completed", status.resources_allocated["error"]
    assert status.resources_allocated["algorithm"] == "dpo"
    assert status.resources_allocated["model"] == paths[f"{sft_uuid}-final"]


def test_sft_then_dpo_sft_lowers_the_validation_loss_and_dpo_raises_the_sft_models_margin(
    client: LlamaStackClient, tiny_model: Path
) -> None:
    train, held_out = ROWS[:24], ROWS[24:32]
    sft_uuid = unique("sft")
    client.alpha.post_training.supervised_fine_tune(
        **sft_request(
            sft_uuid,
            tiny_model,
            register_rows(client, train),
            validation_dataset_id=register_rows(client, held_out),
            n_epochs=2,
            max_steps_per_epoch=None,
            batch_size=8,
            lr=1e-2,
        )
    )
    status = wait_final(client, sft_uuid)
    assert status.status == "completed", status.resources_allocated["error"]
    assert status.resources_allocated["tokens_per_s"] > 0  # measured after 3 warm-up steps
    final = status.checkpoints[-1]
    assert final.identifier == f"{sft_uuid}-final"
    metrics = final.training_metrics  # validation loss and perplexity: PostTrainingMetric
    assert metrics is not None and metrics.perplexity == pytest.approx(2.718281828**metrics.validation_loss, rel=1e-3)
    assert metrics.validation_loss < answer_loss(tiny_model, held_out)

    # DPO on the SFT model: prefer the right digits over a wrong answer. Its reference is the SFT model, so the
    # reward margin starts at 0; the held-out pairs' margin is above it after training.
    def pairs(rows: list[dict[str, str]]) -> list[dict[str, list[dict[str, str]]]]:
        return [
            {
                "prompt": [{"role": "user", "content": row["input_query"]}],
                "chosen": [{"role": "assistant", "content": row["expected_answer"]}],
                "rejected": [{"role": "assistant", "content": "I am not sure."}],
            }
            for row in rows
        ]

    dpo_uuid = unique("dpo")
    client.alpha.post_training.preference_optimize(
        **dpo_request(
            dpo_uuid,
            final.identifier,
            register_rows(client, pairs(train)),
            validation_dataset_id=register_rows(client, pairs(held_out)),
            data_format="dialog",
            max_steps_per_epoch=3,
        )
    )
    status = wait_final(client, dpo_uuid)
    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert resources["model"] == final.path
    assert resources["eval_metrics"]["eval_rewards/margins"] > 0


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (
            {"algorithm_config": {"type": "QAT", "quantizer_name": "int8", "group_size": 32}},
            "algorithm_config.type",
            "QAT is not supported",
        ),
        (
            {"algorithm_config": {**UPSTREAM_LORA, "lora_attn_modules": ["q_proj", "qkv_proj"]}},
            "algorithm_config.lora_attn_modules",
            "'qkv_proj' matches no attention layer",
        ),
        (
            {"rows": [*ROWS[:3], {"input_query": "Repeat 1 2 3."}]},
            "dataset_id",
            "row 3: field 'expected_answer' is missing",
        ),
        ({"checkpoint_dir": "/tmp/elsewhere"}, "checkpoint_dir", "is not honoured"),
    ],
)
def test_a_bad_sft_request_is_refused_naming_the_field(
    client: LlamaStackClient, tiny_model: Path, change: dict, field: str, problem: str
) -> None:
    change = dict(change)
    dataset_id = register_rows(client, change.pop("rows", ROWS[:4]))
    request = {**sft_request(unique("sft"), tiny_model, dataset_id), **change}
    with pytest.raises(BadRequestError) as error:
        client.alpha.post_training.supervised_fine_tune(**request)
    assert field in str(error.value) and problem in str(error.value)
