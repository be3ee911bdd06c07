"""Provider config and request resolution, without a server: what each field really does."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llama_stack_provider_trl.config import TRL_DPO_LOSS_TYPES, TrlPostTrainingConfig
from llama_stack_provider_trl.request_validation import build_job_spec, check_preference_rows, job_dir_for
from llama_stack_provider_trl.stack_api import BadRequestError, PreferenceOptimizeRequest

from helpers import dpo_request


def _spec(tmp_path: Path, config: TrlPostTrainingConfig | None = None, device: str = "cpu", **overrides: Any):
    request = PreferenceOptimizeRequest.model_validate(dpo_request("job", "org/model", "ds", **overrides))
    return build_job_spec(request, config or TrlPostTrainingConfig(), tmp_path / "job", device, num_rows=8)


def test_normalize_rewards_true_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="no reward normalization"):
        TrlPostTrainingConfig(normalize_rewards=True)


@pytest.mark.parametrize("loss", ["kto_pair", "nonsense"])
def test_config_loss_type_must_be_a_trl_loss(loss: str) -> None:
    with pytest.raises(ValidationError, match="sigmoid, hinge, ipo"):
        TrlPostTrainingConfig(dpo_loss_type=loss)


def test_every_trl_loss_is_accepted_in_config() -> None:
    for loss in TRL_DPO_LOSS_TYPES:
        assert TrlPostTrainingConfig(dpo_loss_type=loss).dpo_loss_type == loss


def test_bad_device_is_rejected() -> None:
    with pytest.raises(ValidationError, match="device"):
        TrlPostTrainingConfig(device="tpu")


def test_sample_run_config_is_a_valid_config_once_env_defaults_apply() -> None:
    sample = TrlPostTrainingConfig.sample_run_config("~/.llama/distributions/trl")
    resolved = {
        k: v.split(":=", 1)[1].rstrip("}") if isinstance(v, str) and ":=" in v else v for k, v in sample.items()
    }
    assert TrlPostTrainingConfig(**resolved).output_dir == "~/.llama/distributions/trl/post_training"


def test_schema_defaults_do_not_override_the_provider_config(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(mixed_precision="no", dpo_loss_type="ipo", gradient_checkpointing=True)
    spec = _spec(tmp_path, config, max_steps_per_epoch=None, algorithm_config={"beta": 0.3})
    # the request did not set dtype, loss_type, max_steps_per_epoch or activation checkpointing
    assert spec.precision == "fp32"
    assert spec.loss_type == "ipo"
    assert spec.max_steps_per_epoch is None
    assert spec.gradient_checkpointing is True
    assert spec.beta == 0.3


def test_request_values_win_when_the_request_sets_them(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(mixed_precision="no", dpo_loss_type="ipo", gradient_checkpointing=True)
    spec = _spec(
        tmp_path,
        config,
        algorithm_config={"beta": 0.2, "loss_type": "hinge"},
        dtype="bf16",
        max_steps_per_epoch=2,
        gradient_accumulation_steps=3,
        efficiency_config={"enable_activation_checkpointing": False, "enable_activation_offloading": True},
    )
    assert (spec.loss_type, spec.precision, spec.max_steps_per_epoch) == ("hinge", "bf16", 2)
    assert spec.gradient_accumulation_steps == 3
    assert spec.gradient_checkpointing is False and spec.activation_offloading is True


def test_config_supplies_optimizer_defaults_when_the_request_has_none(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(learning_rate=3e-4, weight_decay=0.01, warmup_steps=5)
    request = dpo_request("job", "org/model", "ds")
    del request["training_config"]["optimizer_config"]
    spec = build_job_spec(PreferenceOptimizeRequest.model_validate(request), config, tmp_path, "cpu", num_rows=1)
    assert (spec.learning_rate, spec.weight_decay, spec.warmup_steps, spec.optimizer) == (3e-4, 0.01, 5, "adamw")


def test_use_reference_model_false_precomputes_reference_log_probs(tmp_path: Path) -> None:
    assert _spec(tmp_path).reference_strategy == "frozen_copy"
    assert _spec(tmp_path, TrlPostTrainingConfig(use_reference_model=False)).reference_strategy == (
        "precomputed_log_probs"
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            {
                "data_config": {
                    "dataset_id": "ds",
                    "batch_size": 2,
                    "shuffle": True,
                    "data_format": "instruct",
                    "packed": True,
                }
            },
            "packed",
        ),
        ({"efficiency_config": {"fsdp_cpu_offload": True}}, "efficiency_config"),
    ],
)
def test_options_a_single_device_dpo_run_cannot_honour_are_rejected(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequestError, match=field):
        _spec(tmp_path, **overrides)


def test_free_form_configs_must_be_empty(tmp_path: Path) -> None:
    for key in ("hyperparam_search_config", "logger_config"):
        request = dpo_request("job", "org/model", "ds")
        request[key] = {"anything": 1}
        with pytest.raises(BadRequestError, match=key):
            build_job_spec(
                PreferenceOptimizeRequest.model_validate(request), TrlPostTrainingConfig(), tmp_path, "cpu", 1
            )


def test_job_dir_stays_inside_the_output_root(tmp_path: Path) -> None:
    assert job_dir_for(tmp_path.resolve(), "run-1.a_b") == tmp_path.resolve() / "run-1.a_b"
    for bad in ("..", "../x", "/abs", "a/../../b", ""):
        with pytest.raises(BadRequestError, match="job_uuid"):
            job_dir_for(tmp_path.resolve(), bad)


def test_rows_keep_only_the_preference_fields() -> None:
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r", "extra": 1}]
    assert check_preference_rows("ds", rows) == [{"prompt": "p", "chosen": "c", "rejected": "r"}]
