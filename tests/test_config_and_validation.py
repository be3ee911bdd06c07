"""Provider config and request resolution, without a server: what each field really does."""

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llama_stack_provider_trl.algorithms.dpo import DPOJobSpec
from llama_stack_provider_trl.config import PER_JOB_FIELDS, TRL_DPO_LOSS_TYPES, TrlPostTrainingConfig
from llama_stack_provider_trl.engine.admission import admit, job_dir_for
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.llama_stack.stack_api import PreferenceOptimizeRequest
from llama_stack_provider_trl.llama_stack.stack_requests import dpo_job_request

from helpers import dpo_request
from job_fixtures import EightRows

REPO = Path(__file__).resolve().parent.parent


def _admit(
    tmp_path: Path, request: dict[str, Any], config: TrlPostTrainingConfig | None = None, device: str = "cpu"
) -> DPOJobSpec:
    job_request = dpo_job_request(PreferenceOptimizeRequest.model_validate(request))
    config = config or TrlPostTrainingConfig()
    admitted = admit(
        job_request,
        config,
        output_root=tmp_path.resolve(),
        device=device,
        job_exists=lambda _: False,
        sources=EightRows(),
    )
    return asyncio.run(admitted).spec


def _spec(tmp_path: Path, config: TrlPostTrainingConfig | None = None, device: str = "cpu", **overrides: Any):
    return _admit(tmp_path, dpo_request("job", "org/model", "ds", **overrides), config, device)


def test_normalize_rewards_runs_sigmoid_as_sigmoid_norm_and_keeps_ipo(tmp_path: Path) -> None:
    normalized = TrlPostTrainingConfig(normalize_rewards=True)
    assert _spec(tmp_path, normalized, algorithm_config={"beta": 0.1}).loss_types == ["sigmoid_norm"]
    assert _spec(tmp_path, normalized, algorithm_config={"beta": 0.1, "loss_type": "ipo"}).loss_types == ["ipo"]
    assert _spec(tmp_path, algorithm_config={"beta": 0.1}).loss_types == ["sigmoid"]  # the default: standard DPO


def test_normalize_rewards_with_a_loss_that_has_no_normalized_form_is_refused_naming_loss_and_field(
    tmp_path: Path,
) -> None:
    with pytest.raises(RequestError, match=r"algorithm_config.loss_type: loss 'hinge' has no length-normalized"):
        _spec(
            tmp_path,
            TrlPostTrainingConfig(normalize_rewards=True),
            algorithm_config={"beta": 0.1, "loss_type": "hinge"},
        )
    with pytest.raises(RequestError, match=r"hyperparam_search_config: .*loss 'sft' has no length-normalized"):
        _with_overrides(tmp_path, {"normalize_rewards": True, "dpo_loss_type": ["sigmoid", "sft"]})
    with pytest.raises(ValidationError, match="loss 'robust' has no length-normalized form"):
        TrlPostTrainingConfig(normalize_rewards=True, dpo_loss_type="robust")


def test_dpo_beta_is_the_beta_of_a_request_that_carries_none(tmp_path: Path) -> None:
    request = dpo_job_request(PreferenceOptimizeRequest.model_validate(dpo_request("job", "org/model", "ds")))
    without_beta = dataclasses.replace(request, method=dataclasses.replace(request.method, beta=None))
    admitted = admit(
        without_beta,
        TrlPostTrainingConfig(dpo_beta=0.25),
        output_root=tmp_path.resolve(),
        device="cpu",
        job_exists=lambda _: False,
        sources=EightRows(),
    )
    assert asyncio.run(admitted).spec.beta == 0.25


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


def test_sample_run_config_is_the_provider_block_of_run_yaml() -> None:
    run = yaml.safe_load((REPO / "run.yaml").read_text())
    [provider] = run["providers"]["post_training"]
    assert TrlPostTrainingConfig.sample_run_config("~/.llama/distributions/trl") == provider["config"]


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
    assert spec.loss_types == ["ipo"]
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
    assert (spec.loss_types, spec.precision, spec.max_steps_per_epoch) == (["hinge"], "bf16", 2)
    assert spec.gradient_accumulation_steps == 3
    assert spec.gradient_checkpointing is False and spec.activation_offloading is True


def test_config_supplies_optimizer_defaults_when_the_request_has_none(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(learning_rate=3e-4, weight_decay=0.01, warmup_steps=5)
    request = dpo_request("job", "org/model", "ds")
    del request["training_config"]["optimizer_config"]
    spec = _admit(tmp_path, request, config)
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
    with pytest.raises(RequestError, match=field):
        _spec(tmp_path, **overrides)


@pytest.mark.parametrize(
    ("logger_config", "field", "problem"),
    [
        ({"comet": {}}, "logger_config.comet", "unknown tracker 'comet'; use tensorboard, mlflow, wandb"),
        ({"mlflow": {"experiment": "e"}}, "logger_config.mlflow.experiment", "takes tracking_uri, experiment_name"),
        ({"tensorboard": {"log_dir": "/tmp"}}, "logger_config.tensorboard.log_dir", "takes no options"),
        ({"wandb": {"mode": "cloud"}}, "logger_config.wandb.mode", "use offline"),
        ({"mlflow": {"experiment_name": 3}}, "logger_config.mlflow.experiment_name", "must be a string"),
        ({"tensorboard": "yes"}, "logger_config.tensorboard", "must be an object of options"),
        ({"wandb": {"tags": "a,b"}}, "logger_config.wandb.tags", "must be a list of at most 64 strings"),
        ({"wandb": {"tags": ["x" * 65]}}, "logger_config.wandb.tags[0]", "1 to 64 characters"),
        # local stores are the server owner's: a request may not aim the server's writes at a path
        ({"mlflow": {"tracking_uri": "file:///etc"}}, "logger_config.mlflow.tracking_uri", "not an http(s)"),
        # remote hosts are the operator's to allow (tracker_hosts, empty by default): not the cloud's metadata service
        (
            {"mlflow": {"tracking_uri": "http://169.254.169.254/latest/meta-data"}},
            "logger_config.mlflow.tracking_uri",
            "host 169.254.169.254 is not among the server's tracker_hosts",
        ),
        ({"wandb": {"mode": "online"}}, "logger_config.wandb.mode", "host api.wandb.ai is not among"),
    ],
)
def test_a_bad_logger_config_key_is_refused_naming_it(
    tmp_path: Path, logger_config: dict[str, Any], field: str, problem: str
) -> None:
    request = dpo_request("job", "org/model", "ds")
    request["logger_config"] = logger_config
    with pytest.raises(RequestError) as refused:
        _admit(tmp_path, request)
    assert refused.value.field == field and problem in str(refused.value)


def test_trackers_default_to_the_job_directory_and_the_job_name(tmp_path: Path) -> None:
    request = dpo_request("job", "org/model", "ds")
    request["logger_config"] = {"tensorboard": {}, "mlflow": {"experiment_name": "dpo"}, "wandb": True}

    trackers = _admit(tmp_path, request).trackers

    assert trackers.tensorboard is True
    assert trackers.mlflow is not None and trackers.wandb is not None
    assert trackers.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve()}/job/mlflow.db"
    assert trackers.mlflow.experiment_name == "dpo"
    assert (trackers.wandb.project, trackers.wandb.mode) == ("llama-stack-trl", "offline")
    shared = TrlPostTrainingConfig(mlflow_tracking_uri="http://mlflow:5000")
    assert _admit(tmp_path, request, shared).trackers.mlflow.tracking_uri == "http://mlflow:5000"


def test_job_dir_stays_inside_the_output_root(tmp_path: Path) -> None:
    assert job_dir_for(tmp_path.resolve(), Given("run-1.a_b", "job_uuid")) == tmp_path.resolve() / "run-1.a_b"
    for bad in ("..", "../x", "/abs", "a/../../b", ""):
        with pytest.raises(RequestError, match="job_uuid"):
            job_dir_for(tmp_path.resolve(), Given(bad, "job_uuid"))


def _with_overrides(
    tmp_path: Path,
    overrides: dict[str, Any],
    config: TrlPostTrainingConfig | None = None,
    device: str = "cpu",
    **kw: Any,
):
    request = dpo_request("job", "org/model", "ds", **kw)
    request["hyperparam_search_config"] = overrides
    return _admit(tmp_path, request, config, device)


def test_per_job_overrides_set_lora_and_checkpointing_for_that_job_only(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig()
    spec = _with_overrides(
        tmp_path,
        {
            "use_lora": True,
            "lora_rank": 4,
            "lora_target_modules": ["q_proj"],
            "merge_adapter": True,
            "save_total_limit": 2,
        },
        config,
    )
    assert spec.lora is not None
    assert (spec.lora.rank, spec.lora.target_modules, spec.lora.merge_adapter) == (4, ["q_proj"], True)
    assert spec.save_total_limit == 2
    assert spec.reference_strategy == "adapters_disabled"  # the base model with adapters off: no second copy
    assert config.use_lora is False and _spec(tmp_path, config).lora is None


def test_reference_strategy_follows_use_reference_model_and_lora(tmp_path: Path) -> None:
    cases = {
        (True, False): "frozen_copy",
        (True, True): "adapters_disabled",
        (False, False): "precomputed_log_probs",
        (False, True): "precomputed_log_probs",
    }
    for (use_reference_model, use_lora), strategy in cases.items():
        spec = _with_overrides(tmp_path, {"use_reference_model": use_reference_model, "use_lora": use_lora})
        assert spec.reference_strategy == strategy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rat": 1e-5}, r"unknown or not per-job keys \['learning_rat'\]"),
        ({"output_dir": "/tmp/elsewhere"}, "output_dir"),
        ({"trust_remote_code": True}, "trust_remote_code"),
        ({"lora_rank": 0}, "lora_rank: Input should be greater than or equal to 1"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"use_lora": "maybe"}, "use_lora"),
        ({"dpo_loss_type": ["sigmoid", "kto_pair"]}, "kto_pair"),
        ({"dpo_loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "one weight per loss"),
        ({"merge_adapter": True}, "set use_lora true"),
        ({"qlora": True}, "set use_lora true"),
        ({"use_lora": True, "qlora": True}, "QLoRA needs a CUDA device"),
    ],
)
def test_a_bad_per_job_override_is_a_request_error_naming_the_key(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(RequestError, match=message) as raised:
        _with_overrides(tmp_path, overrides)
    assert "hyperparam_search_config" in str(raised.value)


def test_a_list_of_losses_with_weights_comes_from_config_or_overrides(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(dpo_loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    spec = _spec(tmp_path, config, algorithm_config={"beta": 0.1})  # the request sets no loss_type
    assert (spec.loss_types, spec.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    spec = _with_overrides(tmp_path, {"dpo_loss_type": ["ipo", "sft"]}, algorithm_config={"beta": 0.1})
    assert (spec.loss_types, spec.loss_weights) == (["ipo", "sft"], None)


def test_the_request_loss_type_wins_over_the_config_list(tmp_path: Path) -> None:
    config = TrlPostTrainingConfig(dpo_loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    spec = _spec(tmp_path, config, algorithm_config={"beta": 0.1, "loss_type": "hinge"})
    assert (spec.loss_types, spec.loss_weights) == (["hinge"], None)
    with pytest.raises(RequestError, match=r"conflicts with hyperparam_search_config\.dpo_loss_type"):
        _with_overrides(tmp_path, {"dpo_loss_type": "ipo"}, algorithm_config={"beta": 0.1, "loss_type": "hinge"})


def test_master_weights_in_the_optimizer_is_per_job_and_refused_for_fp16(tmp_path: Path) -> None:
    assert _spec(tmp_path).master_weights == "model"
    assert _with_overrides(tmp_path, {"master_weights": "optimizer"}).master_weights == "optimizer"
    request = dpo_request("job", "org/model", "ds", dtype="fp16")
    request["hyperparam_search_config"] = {"master_weights": "optimizer"}
    with pytest.raises(RequestError, match=r"master_weights: optimizer needs bf16 .* fp16; ask for .* bf16"):
        _admit(tmp_path, request, device="cuda")


def test_torch_compile_is_per_job_and_refused_where_it_cannot_build_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _spec(tmp_path).torch_compile is False
    assert _with_overrides(tmp_path, {"torch_compile": True}).torch_compile is True
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RequestError, match=r"hyperparam_search_config.torch_compile: .*C\+\+ compiler.*no-such"):
        _with_overrides(tmp_path, {"torch_compile": True})
    assert _spec(tmp_path).torch_compile is False  # a job that does not compile needs no compiler
    with pytest.raises(RequestError, match=r"torch_compile: .*MPS .*; set torch_compile: false"):
        _with_overrides(tmp_path, {"torch_compile": True}, device="mps")


def test_docs_config_has_one_row_for_every_field_marking_exactly_the_per_job_ones() -> None:
    rows = [
        line.split("|")[1:-1] for line in (REPO / "docs" / "config.md").read_text().splitlines() if line[:3] == "| `"
    ]
    documented = [(name, cells[2].strip() == "job") for cells in rows for name in re.findall(r"`(\w+)`", cells[0])]
    fields = TrlPostTrainingConfig.model_fields
    assert sorted(documented) == sorted((name, name in PER_JOB_FIELDS) for name in fields)
