"""Large training files on a real `ogx run`: one over max_training_file_bytes is refused before it is read, and one
under it is read off the event loop, so the server answers other requests while it does."""

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import client_for, ogx_server
from helpers import dpo, openai_preferences, upload

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


def test_the_server_answers_other_requests_while_it_reads_a_large_training_file(
    limited_server: StackServer, limited_client: openai.OpenAI, tiny_model: Path
) -> None:
    lines = LIMIT // len(PAIR) - 1000  # just under the limit; its bad last line is found after reading all of it
    file_id = upload(limited_client, PAIR * lines + "{not json\n")

    answered_meanwhile = 0
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(
            limited_client.fine_tuning.jobs.create, model=str(tiny_model), training_file=file_id, method=dpo()
        )
        while not creating.done():
            if limited_server.healthy() and not creating.done():
                answered_meanwhile += 1
        with pytest.raises(openai.BadRequestError) as refused:
            creating.result()

    assert f"line {lines + 1}: not valid JSON" in refused.value.message
    # Read on the event loop, the file's seconds of parsing let no request through: only the moments before it
    # do (about 20 answers here, against 160 while it is read on a thread)
    assert answered_meanwhile >= 60
