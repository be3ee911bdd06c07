"""Which local directories a request may train from: model directories only, inside allowed_model_dirs when the
server sets them, and the outputs of the caller's own earlier jobs (admission's model check, without a server)."""

from http import HTTPStatus
from pathlib import Path

import pytest

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Caller, Given
from llama_stack_provider_trl.engine.model_source import check_model

MINE = Caller(may_read_job=lambda job_uuid: job_uuid == "mine")


def _model_dir(path: Path, *files: str) -> Path:
    path.mkdir(parents=True)
    for name in files or ("config.json", "model.safetensors"):
        (path / name).write_text("{}")
    return path


def _check(name: str | Path, output_root: Path, caller: Caller = MINE, **config: object) -> str:
    return check_model(Given(str(name), "finetuned_model"), TrlPostTrainingConfig(**config), output_root, caller)


def _refusal(name: str | Path, output_root: Path, **config: object) -> RequestError:
    with pytest.raises(RequestError) as refused:
        _check(name, output_root, **config)
    return refused.value


def test_a_checkpoint_of_a_job_the_caller_may_not_read_is_refused_as_if_that_job_did_not_exist(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    mine = _model_dir(jobs / "mine" / "checkpoints" / "final")
    theirs = _model_dir(jobs / "theirs" / "checkpoints" / "final")

    assert _check(mine, jobs) == str(mine)
    refused, absent = _refusal(theirs, jobs), _refusal(jobs / "nobody" / "checkpoints" / "final", jobs)
    assert refused.status == absent.status == HTTPStatus.FORBIDDEN
    assert str(refused).replace("theirs", "nobody") == str(absent)
    assert "not inside a job of yours" in str(refused)


def test_with_allowed_model_dirs_only_their_models_and_the_callers_own_checkpoints_are_allowed(tmp_path: Path) -> None:
    allowed, jobs = tmp_path / "models", tmp_path / "jobs"
    inside = _model_dir(allowed / "tiny")
    mine = _model_dir(jobs / "mine" / "checkpoints" / "final")
    outside = _model_dir(tmp_path / "elsewhere")
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    config = {"allowed_model_dirs": [str(allowed)]}

    assert _check(inside, jobs, **config) == str(inside)
    assert _check(mine, jobs, **config) == str(mine)
    for name in (outside, allowed / "link", allowed / ".." / "elsewhere", "/etc"):
        refused = _refusal(name, jobs, **config)
        assert refused.status == HTTPStatus.FORBIDDEN and f"allowed_model_dirs: {allowed}" in str(refused)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (("notes.txt",), "is not a model directory: it has no config.json"),
        (("adapter_config.json", "adapter_model.safetensors"), "is a LoRA adapter without a readable base model"),
        (("config.json",), "has a config.json but no weights beside it"),
    ],
)
def test_a_local_directory_that_holds_no_model_is_400_naming_the_field(
    tmp_path: Path, files: tuple[str, ...], problem: str
) -> None:
    directory = _model_dir(tmp_path / "dir", *files)
    refused = _refusal(directory, tmp_path / "jobs")
    assert refused.status == HTTPStatus.BAD_REQUEST and str(refused).startswith(
        f"finetuned_model: '{directory}' {problem}"
    )


def test_a_name_that_climbs_out_with_dot_dot_is_a_path_not_a_hub_id(tmp_path: Path) -> None:
    refused = _refusal("org/../../no-such-model-dir", tmp_path / "jobs")
    assert str(refused) == "finetuned_model: local model directory 'org/../../no-such-model-dir' does not exist"
    assert _check("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "jobs") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_an_adapter_trains_from_its_merged_base_which_obeys_the_same_rules(tmp_path: Path) -> None:
    allowed, jobs = tmp_path / "models", tmp_path / "jobs"
    base, elsewhere = _model_dir(allowed / "base"), _model_dir(tmp_path / "elsewhere")
    adapter = _model_dir(jobs / "mine" / "checkpoints" / "final", "adapter_config.json", "adapter_model.safetensors")
    config = {"allowed_model_dirs": [str(allowed)]}

    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{base}"}}')
    assert _check(adapter, jobs, **config) == str(adapter)
    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{elsewhere}"}}')
    refused = _refusal(adapter, jobs, **config)
    assert refused.status == HTTPStatus.FORBIDDEN and "base_model_name_or_path" in str(refused)
