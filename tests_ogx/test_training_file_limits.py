"""Large training files: on a real `ogx run`, one over max_training_file_bytes is refused before it is read; and a
file is parsed off the event loop, so the server answers other requests while it does (in-process, where the
parse can be held until the loop has shown it runs)."""

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.ogx.api import CreateFineTuningJobRequest
from llama_stack_provider_trl.ogx.fine_tuning import ROW_READERS
from llama_stack_provider_trl.ogx.training_files import preference_rows

from conftest import client_for, ogx_server
from helpers import dpo, openai_preferences, upload
from in_process import Door

LIMIT = 20 << 20
PAIR = json.dumps(openai_preferences([{"prompt": "What is 1 plus 1?", "chosen": " 2.", "rejected": " 3."}])[0]) + "\n"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    with ogx_server(tmp_path_factory.mktemp("ogx-file-limits"), max_training_file_bytes=LIMIT) as running:
        yield running


@pytest.fixture(scope="module")
def limited_client(limited_server: StackServer) -> openai.OpenAI:
    return client_for(limited_server)


def test_a_training_file_over_max_training_file_bytes_is_413_naming_the_file_and_the_limit(
    limited_client: openai.OpenAI, tiny_model: Path
) -> None:
    lines = LIMIT // len(PAIR) + 1
    file_id = upload(limited_client, PAIR * lines)

    with pytest.raises(openai.APIStatusError) as refused:
        limited_client.fine_tuning.jobs.create(model=str(tiny_model), training_file=file_id, method=dpo())

    assert refused.value.status_code == 413
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]
    assert f"file '{file_id}' has 20.0 MiB, more than the 20.0 MiB this server reads" in refused.value.message
    assert "(max_training_file_bytes)" in refused.value.message


def test_a_training_file_is_parsed_off_the_event_loop_so_the_server_answers_other_requests_meanwhile(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader holds the file until the server's event loop has run something else after reading began: read on
    # the loop itself, nothing else could run and the reader gives up with the error below
    reading, loop_ran = threading.Event(), threading.Event()

    def reader_that_waits_for_the_loop(file: Any, body: bytes, limit: int) -> list[dict[str, Any]]:
        reading.set()
        if not loop_ran.wait(timeout=30):
            raise RuntimeError("the event loop answered nothing while the training file was read")
        return preference_rows(file, body, limit)

    monkeypatch.setitem(ROW_READERS, "dpo", reader_that_waits_for_the_loop)
    door = Door(tmp_path)
    request = CreateFineTuningJobRequest.model_validate(
        {"model": str(tiny_model), "training_file": door.files.upload(PAIR * 100), "method": dpo()}
    )

    async def create_while_the_loop_answers_another_request() -> str:
        creating = asyncio.create_task(door.impl.create_fine_tuning_job(request))
        while not reading.is_set() and not creating.done():
            await asyncio.sleep(0.001)
        loop_ran.set()  # the other request, answered on the loop while the file is read
        return (await creating).status

    try:
        assert asyncio.run(create_while_the_loop_answers_another_request()) == "queued"
    finally:
        door.impl.engine.jobs.shutdown()
