"""Bad fine-tuning requests refused in-process, through the OGX front door's create over the engine, with files
held in memory: each refusal as the API answers it (status, ``param``, ``code`` and message, built by the same
``error_response`` the endpoint uses) and nothing queued. test_fine_tuning_errors.py keeps one real-server test per
status."""

from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from helpers import dpo, openai_preferences
from in_process import Door

GOOD = openai_preferences([{"prompt": "What is 1 plus 1?", "chosen": " 2.", "rejected": " 3."}])[0]


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """One door for the module: every request in it is refused, so none leaves a job behind."""
    opened = Door(tmp_path_factory.mktemp("door"))
    yield opened
    opened.impl.engine.jobs.shutdown()


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


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_training_file_is_a_400_naming_the_file_line_and_field(door: Door, tiny_model: Path, case: str) -> None:
    lines, expected = BAD_FILES[case]
    file_id = door.files.upload(lines)
    status, param, code, message = door.refusal(model=str(tiny_model), training_file=file_id, method=dpo())
    assert (status, param, code) == (400, "training_file", "invalid_value")
    assert f"file '{file_id}' {expected}" in message


def test_a_fine_tuned_model_name_this_server_never_made_is_404(door: Door) -> None:
    request = {"model": "ft:tiny:x:ftjob-nope", "training_file": door.files.upload([GOOD]), "method": dpo()}
    status, param, _, message = door.refusal(**request)
    assert (status, param) == (404, "model") and "no fine-tuned model or checkpoint" in message


def test_files_that_are_missing_or_not_training_data_are_refused(door: Door, tiny_model: Path) -> None:
    model, good = str(tiny_model), door.files.upload([GOOD])
    status, param, _, message = door.refusal(model=model, training_file="file-nope", method=dpo())
    assert (status, param) == (404, "training_file") and "purpose='fine-tune'" in message
    status, param, _, _ = door.refusal(
        model=model, training_file=good, validation_file=door.files.upload("{}\n"), method=dpo()
    )
    assert (status, param) == (400, "validation_file")
    user_data = door.files.upload([GOOD], purpose="user_data")
    status, param, _, message = door.refusal(model=model, training_file=user_data, method=dpo())
    assert (status, param) == (400, "training_file") and "purpose 'user_data'" in message


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
def test_a_bad_supervised_file_is_a_400_naming_the_file_line_and_field(door: Door, tiny_model: Path, case: str) -> None:
    line, expected = BAD_CHATS[case]
    file_id = door.files.upload([CHAT, line])
    status, param, _, message = door.refusal(
        model=str(tiny_model), training_file=file_id, method={"type": "supervised"}
    )
    assert (status, param) == (400, "training_file") and f"file '{file_id}' {expected}" in message


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
def test_methods_and_hyperparameters_are_400s_naming_the_parameter(
    door: Door, tiny_model: Path, method: dict[str, Any], param: str, says: str
) -> None:
    status, named, _, message = door.refusal(
        model=str(tiny_model), training_file=door.files.upload([GOOD]), method=method
    )
    assert (status, named) == (400, param) and says in message


@pytest.mark.parametrize(
    ("options", "param", "says"),
    [
        ({"trl": {"lora_rnak": 8}}, "trl", "a job may override"),
        ({"trl": {"use_lora": True, "lora_rank": 0}}, "trl", "lora_rank"),
        ({"trl": {"merge_adapter": True}}, "trl", "set use_lora true"),
        ({"learning_rate": 1}, "learning_rate", "Extra inputs are not permitted"),
        ({"suffix": "a/b"}, "suffix", "A-Z a-z 0-9"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"integrations": [{"type": "comet"}]}, "integrations[0].type", "unknown tracker 'comet'"),
        ({"integrations": [{"wandb": {"project": "p"}}]}, "integrations[0].type", "missing"),
        ({"integrations": [{"type": "wandb", "mlflow": {}}]}, "integrations[0].mlflow", "takes wandb"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": ""}}]}, "integrations[0].wandb.project", "1 to"),
        ({"integrations": [{"type": "wandb", "wandb": {"tags": ["a", 7]}}]}, "integrations[0].wandb.tags[1]", "string"),
        ({"integrations": [{"type": "tensorboard"}, {"type": "tensorboard"}]}, "integrations[1].type", "twice"),
        ({"seed": 1, "trl": {"seed": 2}}, "seed", "conflicts with trl.seed"),
    ],
)
def test_provider_settings_and_options_are_400s_naming_the_parameter(
    door: Door, tiny_model: Path, options: dict[str, Any], param: str, says: str
) -> None:
    request = {"model": str(tiny_model), "training_file": door.files.upload([GOOD]), "method": dpo(), **options}
    status, named, _, message = door.refusal(**request)
    assert (status, named) == (400, param) and says in message


def test_a_missing_local_model_and_a_directory_that_is_no_model_are_one_403(door: Door) -> None:
    answers = []
    for model in ("/no/such/model", "/etc"):
        status, param, _, message = door.refusal(model=model, training_file=door.files.upload([GOOD]), method=dpo())
        assert (status, param) == (HTTPStatus.FORBIDDEN, "model")
        answers.append(message.replace(model, "<model>"))
    assert answers[0] == answers[1] and "is not a model directory this server trains from" in answers[0]
