"""Each status the fine-tuning API answers a refusal with, once on a real server, in OpenAI's error shape: the openai
client raises BadRequestError, PermissionDeniedError, NotFoundError, ConflictError or InternalServerError carrying
``param`` and ``code``. Every call shares one keep-alive connection, so an error that dropped it would fail the next
call. The rules themselves are checked in-process (test_fine_tuning_refusals.py)."""

import json
import re
from pathlib import Path

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo, openai_preferences, upload, wait_for

GOOD = openai_preferences([{"prompt": "What is 1 plus 1?", "chosen": " 2.", "rejected": " 3."}])[0]


def test_a_bad_training_file_is_a_400_in_openais_shape_and_queues_nothing(
    client: openai.OpenAI, tiny_model: Path
) -> None:
    file_id = upload(client, f'{json.dumps(GOOD)}\n{{"input": \n')
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())
    assert error.value.param == "training_file" and error.value.code == "invalid_value"
    assert f"file '{file_id}' line 2: not valid JSON" in error.value.message
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before  # nothing queued


def test_a_local_model_that_is_missing_is_a_403_naming_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as error:
        client.fine_tuning.jobs.create(training_file=upload(client, [GOOD]), model="/no/such/model", method=dpo())
    assert error.value.param == "model" and error.value.code == "permission_denied"
    assert "is not a model directory this server trains from" in error.value.message


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
