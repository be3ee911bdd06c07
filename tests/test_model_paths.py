"""Which local directories a request may train from: model directories only, inside allowed_model_dirs when the
server sets them, and the outputs of the caller's own earlier jobs, never another job's; every file resolved; one
answer for what is missing, elsewhere or no model; Hub ids only with hub_models (admission's model check, without a
server)."""

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
    assert "is not a model directory this server trains from" in str(refused)


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
        assert refused.status == HTTPStatus.FORBIDDEN and f"allowed_model_dirs ({allowed})" in str(refused)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (("notes.txt",), "is not a model directory: it has no config.json"),
        (("adapter_config.json", "adapter_model.safetensors"), "is a LoRA adapter without a readable base model"),
        (("config.json",), "has a config.json but no weights beside it"),
    ],
)
def test_a_directory_in_the_allowed_ones_that_holds_no_model_is_400_naming_the_field(
    tmp_path: Path, files: tuple[str, ...], problem: str
) -> None:
    directory = _model_dir(tmp_path / "dir", *files)
    refused = _refusal(directory, tmp_path / "jobs", allowed_model_dirs=[str(tmp_path)])
    assert refused.status == HTTPStatus.BAD_REQUEST and str(refused).startswith(
        f"finetuned_model: '{directory}' {problem}"
    )


def test_a_name_that_climbs_out_with_dot_dot_is_a_path_not_a_hub_id(tmp_path: Path) -> None:
    refused = _refusal("org/../../no-such-model-dir", tmp_path / "jobs")
    assert str(refused).startswith("finetuned_model: 'org/../../no-such-model-dir' is not a model directory this")
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


def test_missing_outside_and_not_a_model_are_one_answer_so_no_server_path_is_probed(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    not_a_model = _model_dir(tmp_path / "notes", "notes.txt")
    answers = {
        name: _refusal(path, jobs)
        for name, path in {"missing": tmp_path / "nothing-here", "etc": Path("/etc"), "notes": not_a_model}.items()
    }
    assert {refused.status for refused in answers.values()} == {HTTPStatus.FORBIDDEN}
    assert len({str(refused).split("' ", 1)[1] for refused in answers.values()}) == 1
    assert "is not a model directory this server trains from" in str(answers["missing"])


def test_a_checkpoint_in_another_servers_or_an_earlier_output_directory_is_refused_by_path(tmp_path: Path) -> None:
    other_door = tmp_path / "ogx" / "jobs"
    checkpoint = _model_dir(other_door / "ftjob-1" / "checkpoints" / "final")
    (other_door / "ftjob-1" / "job.json").write_text("{}")

    refused = _refusal(checkpoint, tmp_path / "jobs")
    assert refused.status == HTTPStatus.FORBIDDEN and "not a model directory this server trains from" in str(refused)
    refused = _refusal(checkpoint, tmp_path / "jobs", allowed_model_dirs=[str(tmp_path)])
    assert refused.status == HTTPStatus.FORBIDDEN


def test_a_weight_file_symlinked_out_of_an_allowed_directory_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    model = _model_dir(allowed / "tiny", "config.json")
    secret = tmp_path / "elsewhere" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"not the caller's")
    (model / "model.safetensors").symlink_to(secret)

    refused = _refusal(model, tmp_path / "jobs", allowed_model_dirs=[str(allowed)])
    assert refused.status == HTTPStatus.FORBIDDEN and "symlinks resolved" in str(refused)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(_model_dir(allowed / "shared") / "model.safetensors")
    assert _check(model, tmp_path / "jobs", allowed_model_dirs=[str(allowed)]) == str(model)


def test_without_hub_models_a_hub_id_is_refused_also_as_an_adapters_base(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    refused = _refusal("Qwen/Qwen2.5-0.5B-Instruct", jobs, hub_models=False)
    assert refused.status == HTTPStatus.FORBIDDEN and "hub_models: false" in str(refused)
    adapter = _model_dir(jobs / "mine" / "checkpoints" / "final", "adapter_config.json", "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}')
    assert _check(adapter, jobs) == str(adapter)
    refused = _refusal(adapter, jobs, hub_models=False)
    assert refused.status == HTTPStatus.FORBIDDEN and "base_model_name_or_path" in str(refused)
