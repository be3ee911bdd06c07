"""A server shared by several users, without a server: the start-up warnings of one whose operator left a careful
setting unset, how a door knows authentication is on, Hub models switched off for the jobs too, and a fault of the
server answered as a 500 that says nothing internal."""

import asyncio
import logging
import re
from pathlib import Path

import pytest
import yaml

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.job_environment import job_environment
from llama_stack_provider_trl.engine.shared_server import (
    server_has_auth,
    shared_server_warnings,
    shows_server_paths,
    without_server_paths,
)
from llama_stack_provider_trl.llama_stack.post_training import _answers_request_errors
from llama_stack_provider_trl.llama_stack.stack_api import ConflictError


def test_a_server_with_auth_warns_for_each_setting_that_leaves_it_open_and_a_careful_one_for_none() -> None:
    warnings = shared_server_warnings(TrlPostTrainingConfig(show_server_paths=True), auth=True)

    assert [warning.split(" ", 1)[0] for warning in warnings] == [
        "allowed_model_dirs",
        "hub_models",
        "show_server_paths",
        "max_queued_jobs_per_user",
    ]
    careful = TrlPostTrainingConfig(allowed_model_dirs=["/srv/models"], hub_models=False, max_queued_jobs_per_user=2)
    assert shared_server_warnings(careful, auth=True) == []
    assert shared_server_warnings(TrlPostTrainingConfig(), auth=False) == []  # one user: the operator


def test_paths_are_shown_to_callers_without_auth_and_hidden_with_it_unless_the_operator_says() -> None:
    assert shows_server_paths(TrlPostTrainingConfig(), auth=False) is True
    assert shows_server_paths(TrlPostTrainingConfig(), auth=True) is False
    assert shows_server_paths(TrlPostTrainingConfig(show_server_paths=True), auth=True) is True


def test_a_door_knows_auth_is_on_from_the_run_config_its_server_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "run.yaml"
    monkeypatch.setenv("SOME_SERVER_CONFIG", str(config))
    config.write_text(yaml.safe_dump({"server": {"port": 8321}}))
    assert server_has_auth("SOME_SERVER_CONFIG") is False
    config.write_text(yaml.safe_dump({"server": {"auth": {"provider_config": {"type": "custom"}}}}))
    assert server_has_auth("SOME_SERVER_CONFIG") is True
    monkeypatch.delenv("SOME_SERVER_CONFIG")
    assert server_has_auth("SOME_SERVER_CONFIG") is False  # library mode: no server, no auth


def test_without_hub_models_jobs_run_offline() -> None:
    assert job_environment({"PATH": "/bin"}, [], hub_models=False)["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in job_environment({"PATH": "/bin"}, [])


def test_an_unforeseen_error_of_the_stack_door_is_a_500_naming_an_id_the_log_holds() -> None:
    @_answers_request_errors
    async def status() -> None:
        raise IsADirectoryError(21, "Is a directory", "/srv/trl/jobs/job-1/train.log")

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    errors_logger = logging.getLogger("llama_stack_provider_trl.engine.internal_errors")
    errors_logger.addHandler(handler)
    try:
        with pytest.raises(ConflictError) as answered:
            asyncio.run(status())
    finally:
        errors_logger.removeHandler(handler)

    assert answered.value.status_code == 500
    [error_id] = re.findall(r"^internal error (\w+): ", str(answered.value))
    assert "/srv/trl" not in str(answered.value) and "IsADirectoryError" not in str(answered.value)
    [record] = logged
    assert error_id in record.getMessage() and record.exc_info is not None
    assert "/srv/trl/jobs/job-1/train.log" in str(record.exc_info[1])  # the operator's log has the cause


def test_an_error_read_on_a_server_that_hides_its_paths_names_each_place_by_what_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/srv/op")
    error = (
        "no space left writing /srv/op/jobs/job-1/checkpoints (the jobs of /srv/op/jobs); "
        "not /srv/op/jobs/job-10 nor /srv/operator, but ~ for /srv/op/notes"
    )
    assert without_server_paths(error, Path("/srv/op/jobs/job-1")) == (
        "no space left writing <job_dir>/checkpoints (the jobs of <output_dir>); "
        "not <output_dir>/job-10 nor /srv/operator, but ~ for ~/notes"
    )
