"""A succeeded job's fine_tuned_model answers OGX's own /v1/chat/completions and /v1/completions on the server that
trained it (the inline::trl inference provider, serving/ and generation/), through the official openai client: listed,
owned by the job's owner, deleted, kept across a restart. One server with two users and two tiny LoRA jobs (one
saved as an adapter, one also merged) is shared by the file."""

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_stack_provider_trl.common.job_spec import CHECKPOINTS_DIR
from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.token_endpoint import TokenEndpoint

from conftest import ogx_server
from helpers import dpo, openai_preferences, upload, wait_final

# No access_policy: OGX's default, under which a user reads what it owns or shares an attribute with; these two share
# none. The operator's local model (no owner) is everyone's.
USERS = {
    "alice-token": {"principal": "alice", "attributes": {"roles": ["alice-team"]}},
    "bob-token": {"principal": "bob", "attributes": {"roles": ["bob-team"]}},
    "carol-token": {"principal": "carol", "attributes": {"projects": ["shared"]}},
}
QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]
# A random tiny model's answer is mostly special tokens: vLLM's skip_special_tokens (an extra field) shows them
CLI = Path(sys.executable).with_name("llama-stack-trl")
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12, "extra_body": {"skip_special_tokens": False}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ogx-serving")


@pytest.fixture(scope="module")
def serving_server(home: Path, tiny_model: Path) -> Iterator[StackServer]:
    with TokenEndpoint(USERS) as tokens:
        auth = {"provider_config": {"type": "custom", "endpoint": tokens.url}}
        serving = {"device": "cpu", "models": {"tiny-base": str(tiny_model)}, "cpu_threads": 1}
        with ogx_server(home, auth, serving=serving) as running:
            yield running


def _as(server: StackServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=token, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def alice(serving_server: StackServer) -> openai.OpenAI:
    return _as(serving_server, "alice-token")


@pytest.fixture(scope="module")
def bob(serving_server: StackServer) -> openai.OpenAI:
    return _as(serving_server, "bob-token")


@pytest.fixture(scope="module")
def carol(serving_server: StackServer) -> openai.OpenAI:
    return _as(serving_server, "carol-token")


@pytest.fixture(scope="module")
def models(alice: openai.OpenAI, tiny_model: Path, preference_rows: list[dict[str, str]], home: Path) -> dict[str, Any]:
    """Alice's two LoRA jobs, trained to the end: "adapter" serves its adapter over the tiny model, "merged" its
    merged model. Each: fine_tuned_model, and the checkpoint directory a user would load."""
    training_file = upload(alice, openai_preferences(preference_rows[:8]))
    kinds = {"adapter": {"use_lora": True}, "merged": {"use_lora": True, "merge_adapter": True}}
    jobs = {
        kind: alice.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=training_file, method=dpo(), suffix=kind, extra_body={"trl": trl}
        )
        for kind, trl in kinds.items()
    }
    found = {}
    for kind, job in jobs.items():
        done = wait_final(alice, job.id)
        assert done.status == "succeeded", done.error
        checkpoint = (
            home / "ogx" / "jobs" / job.id / CHECKPOINTS_DIR / ("final-merged" if kind == "merged" else "final")
        )
        found[kind] = {"name": done.fine_tuned_model, "checkpoint": checkpoint}
    assert (found["adapter"]["checkpoint"] / "adapter_config.json").is_file()
    assert not (found["merged"]["checkpoint"] / "adapter_config.json").exists()
    return found


def _generate(checkpoint: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """What transformers' own greedy generate answers, the prompt's tokens left out."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=max_new_tokens)
    return out[0, len(prompt_ids) :].tolist()


def _answer_ids(tokenizer: Any, text: str, generated: list[int]) -> list[int]:
    """The generated tokens up to the end of sequence, checked to spell ``text``."""
    eos = tokenizer.eos_token_id
    ids = generated[: generated.index(eos)] if eos in generated else generated
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    return ids


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_a_finished_jobs_model_is_listed_and_answers_token_for_token_as_generate_on_its_checkpoint(
    alice: openai.OpenAI, models: dict[str, Any], tiny_model: Path, kind: str
) -> None:
    name, checkpoint = models[kind]["name"], models[kind]["checkpoint"]
    assert name in [model.id for model in alice.models.list()]
    assert alice.models.retrieve(name).id == name

    answer = alice.chat.completions.create(model=name, messages=QUESTION, **GREEDY)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    generated = _generate(checkpoint, prompt_ids, GREEDY["max_tokens"])
    text = answer.choices[0].message.content
    assert text is not None
    ids = _answer_ids(tokenizer, text, generated)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(prompt_ids), len(ids))
    assert answer.choices[0].finish_reason == ("length" if len(ids) == GREEDY["max_tokens"] else "stop")
    assert answer.model == name and answer.object == "chat.completion"


def test_streamed_and_plain_answers_agree(alice: openai.OpenAI, models: dict[str, Any]) -> None:
    name = models["adapter"]["name"]
    plain = alice.chat.completions.create(model=name, messages=QUESTION, **GREEDY)
    chunks = list(
        alice.chat.completions.create(
            model=name, messages=QUESTION, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        plain.choices[0].finish_reason
    ]
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices == []  # OpenAI's chunk order


def test_completions_answer_a_prompt_as_generate_does(
    alice: openai.OpenAI, models: dict[str, Any], tiny_model: Path
) -> None:
    name, checkpoint = models["merged"]["name"], models["merged"]["checkpoint"]
    answer = alice.completions.create(model=name, prompt="What is 2 plus 3?", **GREEDY)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompt_ids = tokenizer("What is 2 plus 3?")["input_ids"]
    _answer_ids(tokenizer, answer.choices[0].text, _generate(checkpoint, prompt_ids, GREEDY["max_tokens"]))


def test_n_seed_stop_and_the_operators_base_model(
    alice: openai.OpenAI, bob: openai.OpenAI, models: dict[str, Any]
) -> None:
    name = models["adapter"]["name"]
    sampled = [
        alice.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, seed=3, n=2, temperature=1.0)
        for _ in range(2)
    ]
    assert [len(s.choices) for s in sampled] == [2, 2]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]

    plain = alice.chat.completions.create(model=name, messages=QUESTION, **GREEDY).choices[0].message.content
    assert plain is not None and len(plain) > 2
    stop = plain[1:3]
    stopped = alice.chat.completions.create(model=name, messages=QUESTION, stop=[stop], **GREEDY).choices[0]
    assert stopped.message.content == plain[: plain.index(stop)] and stopped.finish_reason == "stop"

    # the operator's local model: every user may call it
    assert bob.chat.completions.create(model="tiny-base", messages=QUESTION, **GREEDY).choices[0].message.content


def test_a_request_the_provider_cannot_serve_is_a_400_naming_the_parameter(
    alice: openai.OpenAI, models: dict[str, Any]
) -> None:
    name = models["adapter"]["name"]
    with pytest.raises(openai.BadRequestError, match="n: at most 8"):
        alice.chat.completions.create(model=name, messages=QUESTION, n=9)
    with pytest.raises(openai.BadRequestError, match=r"messages: \d+ tokens; this model reads at most 512"):
        alice.chat.completions.create(model=name, messages=[{"role": "user", "content": "2 plus 3 " * 400}])
    assert alice.chat.completions.create(model=name, messages=QUESTION, **GREEDY).choices  # the connection held


def test_another_user_gets_the_404_of_an_unknown_model(bob: openai.OpenAI, models: dict[str, Any]) -> None:
    theirs = models["adapter"]["name"]
    unknown = theirs.replace("ftjob-", "ftjob-0")
    assert theirs not in [model.id for model in bob.models.list()]
    for name in (theirs, f"trl/{theirs}"):  # OGX's provider/name form reaches no further
        messages = []
        for model in (name, unknown):
            with pytest.raises(openai.NotFoundError) as caught:
                bob.chat.completions.create(model=model, messages=QUESTION, max_tokens=2)
            messages.append(str(caught.value).replace(model.removeprefix("trl/"), "<model>"))
        assert messages[0] == messages[1]
    with pytest.raises(openai.NotFoundError):
        bob.models.retrieve(theirs)
    with pytest.raises(openai.NotFoundError):
        bob.models.delete(theirs)


def test_status_calls_stay_answered_while_a_long_generation_runs(alice: openai.OpenAI, models: dict[str, Any]) -> None:
    name = models["merged"]["name"]
    long = {"model": name, "messages": QUESTION, "max_tokens": 400, "n": 8, "temperature": 1.0, "stream": True}
    stream = alice.chat.completions.create(**long)
    first = next(iter(stream))  # generation has begun
    answered = []
    reader = threading.Thread(target=lambda: answered.append(sum(1 for _ in stream)))
    reader.start()
    assert first.choices[0].delta.role == "assistant"
    assert alice.fine_tuning.jobs.list().data and name in [m.id for m in alice.models.list()]
    reader.join(timeout=120)
    assert answered and answered[0] > 8


def test_an_owner_shares_a_model_with_a_project_through_checkpoint_permissions(
    alice: openai.OpenAI, bob: openai.OpenAI, carol: openai.OpenAI, models: dict[str, Any]
) -> None:
    name = models["adapter"]["name"]
    permissions = alice.fine_tuning.checkpoints.permissions
    with pytest.raises(openai.NotFoundError):
        carol.chat.completions.create(model=name, messages=QUESTION, **GREEDY)

    [permission] = permissions.create(name, project_ids=["shared"]).data
    assert permission.project_id == "shared" and permission.object == "checkpoint.permission"
    assert carol.chat.completions.create(model=name, messages=QUESTION, **GREEDY).choices  # carol is in "shared"
    assert name in [model.id for model in carol.models.list()]
    with pytest.raises(openai.PermissionDeniedError, match="only its owner deletes it"):
        carol.models.delete(name)  # she may call it, not take it from its owner
    assert [p.id for p in permissions.retrieve(name).data] == [permission.id]
    with pytest.raises(openai.NotFoundError):  # not bob's to share: as for a model he cannot see
        bob.fine_tuning.checkpoints.permissions.create(name, project_ids=["bob-team"])

    assert permissions.delete(permission.id, fine_tuned_model_checkpoint=name).deleted
    with pytest.raises(openai.NotFoundError):
        carol.chat.completions.create(model=name, messages=QUESTION, **GREEDY)
    assert permissions.retrieve(name).data == []


def test_a_deleted_model_is_404_and_a_restart_keeps_every_other_registration(
    serving_server: StackServer, alice: openai.OpenAI, models: dict[str, Any]
) -> None:
    kept, deleted = models["adapter"]["name"], models["merged"]["name"]
    before = alice.chat.completions.create(model=kept, messages=QUESTION, **GREEDY).choices[0].message.content

    assert alice.models.delete(deleted).deleted
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model=deleted, messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        alice.models.retrieve(deleted)
    with pytest.raises(openai.PermissionDeniedError, match="not a fine-tuned model"):
        alice.models.delete("tiny-base")

    serving_server.stop()
    serving_server.start()
    listed = [model.id for model in alice.models.list()]
    assert kept in listed and deleted not in listed
    after = alice.chat.completions.create(model=kept, messages=QUESTION, **GREEDY).choices[0].message.content
    assert after == before
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model=deleted, messages=QUESTION, max_tokens=2)


def test_the_cli_chats_with_a_fine_tuned_model(
    serving_server: StackServer, alice: openai.OpenAI, models: dict[str, Any]
) -> None:
    name = models["adapter"]["name"]
    expected = alice.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=12)
    command = [
        str(CLI),
        "--ogx",
        "chat",
        name,
        "-m",
        QUESTION[0]["content"],
        "--temperature",
        "0",
        "--max-tokens",
        "12",
    ]
    env = {**os.environ, "OGX_URL": f"{serving_server.base_url}/v1", "OPENAI_API_KEY": "alice-token"}
    said = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert said.returncode == 0, said.stderr
    assert said.stdout == f"{expected.choices[0].message.content}\n"

    env["OPENAI_API_KEY"] = "bob-token"  # not bob's model: the server's 404, in words
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "not found" in refused.stderr
