"""Reinforcement (GRPO) requests resolved and refused in-process by admission, each refusal naming the caller's
field: the answers per prompt, the batch against the prompts, validation, reasoning effort, the grader and the
provider settings that belong to another algorithm."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.algorithms.grpo import GRPOJobSpec, GRPORequest
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import admit
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given, JobRequest

HP = "method.reinforcement.hyperparameters"
GRADER = {
    "type": "string_check",
    "name": "five",
    "input": "{{sample.output_text}}",
    "reference": "5",
    "operation": "eq",
}
PROMPT = {"prompt": [{"role": "user", "content": "What is 2 plus 3?"}], "item": {"answer": "5"}}


class Prompts:
    """Admission's sources without a server: every file holds 4 prompts."""

    async def registered_model_path(self, model: str) -> None:
        return None

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        return [PROMPT] * 4


METHOD_FIELDS = ("grader", "compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort")


def _admit(root: Path, model: str = "org/model", **fields: Any) -> GRPOJobSpec:
    method = {"grader": Given(GRADER, "method.reinforcement.grader")}
    method |= {name: value for name, value in fields.items() if name in METHOD_FIELDS}
    given = {
        "job_uuid": Given("job", "id"),
        "model": Given(model, "model"),
        "method": GRPORequest(**method),
        "n_epochs": Given(1, f"{HP}.n_epochs"),
        "dataset_id": Given("file-train", "training_file"),
        "batch_size": Given(2, f"{HP}.batch_size"),
        **{name: value for name, value in fields.items() if name not in METHOD_FIELDS},
    }
    admitted = admit(
        JobRequest(**given),
        TrlPostTrainingConfig(check_disk_space=False),
        output_root=(root / "jobs").resolve(),
        device="cpu",
        job_exists=lambda _: False,
        sources=Prompts(),
    )
    spec = asyncio.run(admitted).spec
    assert isinstance(spec, GRPOJobSpec)
    return spec


def _refused(root: Path, **fields: Any) -> RequestError:
    with pytest.raises(RequestError) as refused:
        _admit(root, **fields)
    return refused.value


def test_compute_multiplier_scales_the_answers_sampled_per_prompt(tmp_path: Path) -> None:
    assert _admit(tmp_path).num_generations == 8  # the provider's num_generations
    spec = _admit(tmp_path, compute_multiplier=Given(1.5, f"{HP}.compute_multiplier"))
    assert (spec.num_generations, spec.grader, spec.eval_steps) == (12, GRADER, None)
    too_few = _refused(tmp_path, compute_multiplier=Given(0.1, f"{HP}.compute_multiplier"))
    assert too_few.field == f"{HP}.compute_multiplier" and "gives 1 answers per prompt" in str(too_few)


def test_provider_settings_set_sampling_and_the_loss_and_other_algorithms_settings_are_refused(tmp_path: Path) -> None:
    settings = {"num_generations": 4, "temperature": 0.7, "grpo_beta": 0.04, "grpo_loss_type": "dr_grpo"}
    spec = _admit(tmp_path, overrides=Given(settings, "trl"))
    assert (spec.num_generations, spec.temperature, spec.beta, spec.loss_type) == (4, 0.7, 0.04, "dr_grpo")
    assert _refused(tmp_path, overrides=Given({"grpo_loss_type": "ppo"}, "trl")).field == "trl"
    dpo_setting = _refused(tmp_path, overrides=Given({"dpo_loss_type": "ipo"}, "trl"))
    assert dpo_setting.field == "trl" and "apply to DPO only" in str(dpo_setting)


def test_a_batch_needs_that_many_prompts_and_validation_needs_a_validation_file(tmp_path: Path) -> None:
    batch = _refused(tmp_path, batch_size=Given(5, f"{HP}.batch_size"))
    assert batch.field == f"{HP}.batch_size" and "training_file has 4" in str(batch)
    interval = _refused(tmp_path, eval_interval=Given(2, f"{HP}.eval_interval"))
    assert interval.field == f"{HP}.eval_interval" and "validation file" in str(interval)
    validated = _admit(tmp_path, validation_dataset_id=Given("file-valid", "validation_file"))
    assert (validated.eval_steps, validated.num_generations_eval, validated.num_eval_rows) == (2, 8, 4)  # an epoch


def test_a_bad_grader_is_refused_naming_its_field(tmp_path: Path) -> None:
    bad = _refused(tmp_path, grader=Given({**GRADER, "type": "regex"}, "method.reinforcement.grader"))
    assert bad.field == "method.reinforcement.grader.type"


def _local_model(root: Path, template: str) -> str:
    model = root / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return str(model)


def test_reasoning_effort_reaches_only_a_chat_template_that_reads_it(tmp_path: Path) -> None:
    effort = Given("high", f"{HP}.reasoning_effort")
    plain = _local_model(tmp_path / "plain", "{{ messages[0]['content'] }}")
    refused = _refused(tmp_path, model=plain, reasoning_effort=effort)
    assert refused.field == f"{HP}.reasoning_effort" and "does not read reasoning_effort" in str(refused)
    reads = _local_model(tmp_path / "reads", "{{ reasoning_effort }} {{ messages[0]['content'] }}")
    assert _admit(tmp_path, model=reads, reasoning_effort=effort).chat_template_kwargs == {"reasoning_effort": "high"}
    assert _admit(tmp_path, model=plain, reasoning_effort=Given("default", "x")).chat_template_kwargs == {}
