"""Bad requests to the fine-tuning API are refused when the job is created, in OpenAI's error shape: the openai
client raises BadRequestError, NotFoundError or ConflictError carrying ``param`` and ``code``, and nothing is queued.
Every call shares one keep-alive connection, so an error that dropped it would fail the next call."""

import json
import re
from pathlib import Path
from typing import Any

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo, openai_preferences, upload, wait_for

GOOD = openai_preferences([{"prompt": "What is 1 plus 1?", "chosen": " 2.", "rejected": " 3."}])[0]


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


BAD_FILES = {
    "not JSON": ([GOOD, GOOD, '{"input": '], "line 3: not valid JSON"),
    "a missing field": (
        [GOOD, {k: v for k, v in GOOD.items() if k != "preferred_output"}],
        "line 2: field 'preferred_output' is missing",
    ),
    "a user answer": (
        [_with(non_preferred_output=[{"role": "user", "content": "3."}])],
        "line 1: field 'non_preferred_output[0].role' is 'user'",
    ),
    "empty content": (
        [GOOD, _with(input={"messages": [{"role": "user", "content": " "}]})],
        "line 2: field 'input.messages[0].content' must be a non-empty string",
    ),
    "a role that is a list": (
        [_with(input={"messages": [{"role": ["user"], "content": "hi"}]})],
        "line 1: field 'input.messages[0].role' is ['user']",
    ),
    "JSON nested 100,000 deep": ([GOOD, "[" * 100_000], "line 2: JSON nested too deep"),
    "a supervised example": ([{"messages": [{"role": "user", "content": "hi"}]}], "line 1: a supervised example"),
    "no lines": ([], "has no lines"),
}


def _jsonl(lines: list[Any]) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_training_file_is_refused_naming_the_file_line_and_field(
    client: openai.OpenAI, tiny_model: Path, case: str
) -> None:
    lines, expected = BAD_FILES[case]
    file_id = upload(client, _jsonl(lines))
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())
    assert error.value.param == "training_file" and error.value.code == "invalid_value"
    assert f"file '{file_id}' {expected}" in error.value.message
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before  # nothing queued


def test_a_fine_tuned_model_name_this_server_never_made_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(model="ft:tiny:x:ftjob-nope", training_file=upload(client, [GOOD]), method=dpo())
    assert missing.value.param == "model" and "no fine-tuned model or checkpoint" in missing.value.message


def test_files_that_are_missing_or_not_training_data_are_refused(client: openai.OpenAI, tiny_model: Path) -> None:
    good = upload(client, [GOOD])
    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file="file-nope", method=dpo())
    assert missing.value.param == "training_file" and "purpose='fine-tune'" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad_validation:
        client.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=good, validation_file=upload(client, "{}\n"), method=dpo()
        )
    assert bad_validation.value.param == "validation_file"
    with pytest.raises(openai.BadRequestError) as purpose:
        client.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=upload(client, [GOOD], purpose="user_data"), method=dpo()
        )
    assert purpose.value.param == "training_file" and "purpose 'user_data'" in purpose.value.message


CHAT = {"messages": [{"role": "user", "content": "1 plus 1?"}, {"role": "assistant", "content": "2."}]}
BAD_CHATS = {
    "weight 0": (
        {"messages": [CHAT["messages"][0], {**CHAT["messages"][1], "weight": 0}]},
        "line 2: field 'messages[1].weight' is 0",
    ),
    "no answer": ({"messages": CHAT["messages"][:1]}, "line 2: field 'messages' has no assistant message"),
    "tools": ({**CHAT, "tools": [{"type": "function"}]}, "line 2: tool definitions are not supported"),
}


@pytest.mark.parametrize("case", list(BAD_CHATS))
def test_a_bad_supervised_file_is_refused_naming_the_file_line_and_field(
    client: openai.OpenAI, tiny_model: Path, case: str
) -> None:
    line, expected = BAD_CHATS[case]
    file_id = upload(client, [CHAT, line])
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method={"type": "supervised"})
    assert error.value.param == "training_file" and f"file '{file_id}' {expected}" in error.value.message


@pytest.mark.parametrize(
    ("method", "param", "says"),
    [
        ({"type": "reinforcement"}, "method.reinforcement", "needs method.reinforcement with its grader"),
        ({"type": "dpo", "supervised": {}}, "method", "give only method.dpo"),
        ({"type": "supervised"}, "training_file", "line 1: a preference pair; method supervised needs"),
        (dpo(batch_size=0), "method.dpo.hyperparameters.batch_size", "must be a positive integer"),
        (dpo(beta=-1), "method.dpo.hyperparameters.beta", "must be a finite number > 0"),
        (dpo(learning_rate_multiplier=0), "method.dpo.hyperparameters.learning_rate_multiplier", "> 0"),
        (dpo(n_epochs="many"), "method.dpo.hyperparameters.n_epochs", "Input should be"),
    ],
)
def test_methods_and_hyperparameters_are_checked_naming_the_parameter(
    client: openai.OpenAI, tiny_model: Path, method: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=upload(client, [GOOD]), method=method)
    assert error.value.param == param and says in error.value.message


@pytest.mark.parametrize(
    ("options", "param", "says"),
    [
        ({"extra_body": {"trl": {"lora_rnak": 8}}}, "trl", "a job may override"),
        ({"extra_body": {"trl": {"use_lora": True, "lora_rank": 0}}}, "trl", "lora_rank"),
        ({"extra_body": {"trl": {"merge_adapter": True}}}, "trl", "set use_lora true"),
        ({"extra_body": {"learning_rate": 1}}, "learning_rate", "Extra inputs are not permitted"),
        ({"suffix": "a/b"}, "suffix", "A-Z a-z 0-9"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"integrations": [{"type": "comet"}]}, "integrations[0].type", "unknown tracker 'comet'"),
        ({"integrations": [{"wandb": {"project": "p"}}]}, "integrations[0].type", "missing"),
        ({"integrations": [{"type": "wandb", "mlflow": {}}]}, "integrations[0].mlflow", "takes wandb"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": ""}}]}, "integrations[0].wandb.project", "1 to"),
        ({"integrations": [{"type": "wandb", "wandb": {"tags": ["a", 7]}}]}, "integrations[0].wandb.tags[1]", "string"),
        ({"integrations": [{"type": "tensorboard"}, {"type": "tensorboard"}]}, "integrations[1].type", "twice"),
        ({"seed": 1, "extra_body": {"trl": {"seed": 2}}}, "seed", "conflicts with trl.seed"),
    ],
)
def test_provider_settings_and_options_are_checked_like_hyperparam_search_config(
    client: openai.OpenAI, tiny_model: Path, options: dict[str, Any], param: str, says: str
) -> None:
    request: dict[str, Any] = {"model": str(tiny_model), "method": dpo(), **options}
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(training_file=upload(client, [GOOD]), **request)
    assert error.value.param == param and says in error.value.message


def test_a_local_model_that_is_missing_or_no_model_is_one_403_naming_the_parameter(
    client: openai.OpenAI, tiny_model: Path
) -> None:
    answers = []
    for model in ("/no/such/model", "/etc"):
        with pytest.raises(openai.PermissionDeniedError) as error:
            client.fine_tuning.jobs.create(training_file=upload(client, [GOOD]), model=model, method=dpo())
        assert error.value.param == "model"
        answers.append(error.value.message.replace(model, "<model>"))
    assert answers[0] == answers[1] and "is not a model directory this server trains from" in answers[0]


def test_unknown_jobs_are_404_and_finished_jobs_refuse_cancel_pause_and_resume_with_409(
    client: openai.OpenAI, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    for call in (
        client.fine_tuning.jobs.retrieve,
        client.fine_tuning.jobs.cancel,
        client.fine_tuning.jobs.list_events,
        client.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call("ftjob-nope")
        assert "ftjob-nope" in missing.value.message and missing.value.code == "not_found"

    job = client.fine_tuning.jobs.create(
        model=str(tiny_model), training_file=upload(client, openai_preferences(preference_rows)), method=dpo()
    )
    assert client.fine_tuning.jobs.cancel(job.id).status in ("cancelled", "running")
    assert wait_for(client, job.id, lambda j: j.status == "cancelled").fine_tuned_model is None
    with pytest.raises(openai.ConflictError) as again:
        client.fine_tuning.jobs.cancel(job.id)
    assert "already cancelled" in again.value.message
    with pytest.raises(openai.ConflictError) as pause:
        client.fine_tuning.jobs.pause(job.id)
    assert "only a queued or running job pauses" in pause.value.message
    with pytest.raises(openai.ConflictError) as resume:
        client.fine_tuning.jobs.resume(job.id)
    assert "only a paused job resumes" in resume.value.message


def test_a_server_fault_is_a_500_naming_an_id_the_servers_log_holds_and_nothing_internal(
    client: openai.OpenAI, server: StackServer, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    file_id = upload(client, openai_preferences(preference_rows))
    [stored] = (Path(server.env["TRL_OGX_DIR"]) / "files").rglob(f"{file_id}*")
    stored.unlink()
    stored.mkdir()  # the Files API's storage broken under the server: reading the file raises IsADirectoryError

    with pytest.raises(openai.InternalServerError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())

    message = error.value.message
    [error_id] = re.findall(r"internal error (\w+): ", message)
    assert str(stored) not in message and "IsADirectoryError" not in message and "Errno" not in message
    log = server.log_path.read_text()
    assert f"internal error {error_id}" in log and "IsADirectoryError" in log  # the operator finds it by its id
