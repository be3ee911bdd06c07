"""Several users on one `ogx run`: OGX's own authentication (``custom``, against a token endpoint this module serves)
and access policy decide who sees, reads, cancels, pauses and resumes which fine-tuning job, and whose fine-tuned
model a job may train from; one user cannot fill the queue. Each client's api_key is its bearer token."""

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from ogx.core.datatypes import AuthenticationConfig

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.token_endpoint import TokenEndpoint

from conftest import REPO_ROOT, ogx_server
from helpers import dpo, openai_preferences, upload, wait_final, wait_for

USERS = {
    "alice-token": {"principal": "alice", "attributes": {"roles": ["user"]}},
    "bob-token": {"principal": "bob", "attributes": {"roles": ["user"]}},
    "carol-token": {"principal": "carol", "attributes": {"roles": ["auditor"]}},
}
ACCESS_POLICY = [
    {"permit": {"actions": ["create"]}, "description": "anyone signed in uploads files and starts jobs"},
    {"permit": {"actions": ["create", "read", "update", "delete"]}, "when": "user is owner"},
    {
        "permit": {"actions": ["read"], "resource": "fine_tuning_job::*"},
        "when": "user with auditor in roles",
        "description": "auditors see every fine-tuning job",
    },
]
UNKNOWN_JOB = "ftjob-000000000000000000000000"
LONG = {"save_every_epoch": False}  # a job that trains for a while and writes nothing until it ends


@pytest.fixture(scope="module")
def users_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackServer]:
    with TokenEndpoint(USERS) as tokens:
        auth = {"provider_config": {"type": "custom", "endpoint": tokens.url}, "access_policy": ACCESS_POLICY}
        home = tmp_path_factory.mktemp("ogx-users")
        with ogx_server(home, auth, max_concurrent_jobs=1, max_queued_jobs_per_user=2) as running:
            yield running


def _as(server: StackServer, principal: str) -> openai.OpenAI:
    [token] = [token for token, user in USERS.items() if user["principal"] == principal]
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=token, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def alice(users_server: StackServer) -> openai.OpenAI:
    return _as(users_server, "alice")


@pytest.fixture(scope="module")
def bob(users_server: StackServer) -> openai.OpenAI:
    return _as(users_server, "bob")


@pytest.fixture(scope="module")
def carol(users_server: StackServer) -> openai.OpenAI:
    return _as(users_server, "carol")


@pytest.fixture(scope="module")
def alice_job(
    alice: openai.OpenAI, carol: openai.OpenAI, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> str:
    """Alice's job, trained to the end (2 steps); carol, an auditor, is the first to see it succeed."""
    job = alice.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=upload(alice, openai_preferences(preference_rows[:8])),
        method=dpo(batch_size=4, n_epochs=1),
    )
    done = wait_final(carol, job.id)
    assert done.status == "succeeded", done.error
    return job.id


def _not_found(call: Callable[[str], Any], job_id: str) -> str:
    """What a NotFoundError says, with the job id taken out."""
    with pytest.raises(openai.NotFoundError) as caught:
        call(job_id)
    return str(caught.value).replace(job_id, "<job>")


def test_the_server_warns_at_start_up_of_each_setting_a_shared_server_leaves_open(users_server: StackServer) -> None:
    log = " ".join(users_server.log_path.read_text().split())  # the server's console wraps long lines
    assert "TRL training on a shared server: allowed_model_dirs is unset" in log
    assert "max_queued_jobs_per_user is unset" not in log  # this server sets it


def test_a_request_without_a_valid_token_is_401(users_server: StackServer) -> None:
    jobs_url = f"{users_server.base_url}/v1/fine_tuning/jobs"
    assert httpx.get(jobs_url).status_code == 401
    assert httpx.get(jobs_url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    stranger = openai.OpenAI(base_url=f"{users_server.base_url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.fine_tuning.jobs.list()


def test_another_user_can_neither_see_read_cancel_pause_nor_resume_a_job(
    alice: openai.OpenAI, bob: openai.OpenAI, alice_job: str
) -> None:
    jobs = bob.fine_tuning.jobs
    calls: list[Callable[[str], Any]] = [
        jobs.retrieve,
        jobs.list_events,
        jobs.checkpoints.list,
        jobs.cancel,
        jobs.pause,
        jobs.resume,
    ]
    for call in calls:  # exactly what an unknown job gets: nothing tells bob that alice's job exists
        assert _not_found(call, alice_job) == _not_found(call, UNKNOWN_JOB)
    assert alice_job not in [job.id for job in jobs.list()]

    assert alice_job in [job.id for job in alice.fine_tuning.jobs.list()]
    assert alice.fine_tuning.jobs.checkpoints.list(alice_job).data
    with pytest.raises(openai.ConflictError):  # alice's own job: it is there, and already succeeded
        alice.fine_tuning.jobs.cancel(alice_job)


def test_a_job_cannot_train_from_another_users_fine_tuned_model(
    alice: openai.OpenAI, bob: openai.OpenAI, alice_job: str, preference_rows: list[dict[str, str]]
) -> None:
    job = alice.fine_tuning.jobs.retrieve(alice_job)
    checkpoint = alice.fine_tuning.jobs.checkpoints.list(alice_job).data[-1]  # its first, a Trainer checkpoint
    bobs_file = upload(bob, openai_preferences(preference_rows[:8]))
    unknown = f"ft:tiny:trl:{UNKNOWN_JOB}"
    for theirs in (job.fine_tuned_model, checkpoint.fine_tuned_model_checkpoint):
        assert theirs is not None
        messages = []
        for model in (theirs, unknown):
            with pytest.raises(openai.NotFoundError) as caught:
                bob.fine_tuning.jobs.create(model=model, training_file=bobs_file, method=dpo())
            assert caught.value.body["param"] == "model"  # type: ignore[index]
            messages.append(str(caught.value).replace(model, "<model>"))
        assert messages[0] == messages[1]  # as for a model this server does not have


def test_an_auditor_reads_every_job_but_changes_none_and_the_result_file_stays_the_owners(
    alice: openai.OpenAI, carol: openai.OpenAI, alice_job: str
) -> None:
    assert alice_job in [job.id for job in carol.fine_tuning.jobs.list()]
    assert carol.fine_tuning.jobs.list_events(alice_job).data
    for change in (carol.fine_tuning.jobs.cancel, carol.fine_tuning.jobs.pause, carol.fine_tuning.jobs.resume):
        with pytest.raises(openai.PermissionDeniedError, match="'update'") as caught:
            change(alice_job)
        assert caught.value.body["code"] == "permission_denied"  # type: ignore[index]

    # carol saw the job succeed first, so the result file was stored then: it is alice's all the same
    [result_file] = carol.fine_tuning.jobs.retrieve(alice_job).result_files
    assert alice.files.content(result_file).text.startswith("step,train_loss")
    with pytest.raises(openai.NotFoundError):
        carol.files.content(result_file)


def test_one_user_cannot_fill_the_queue_and_no_one_else_touches_a_queued_job(
    alice: openai.OpenAI,
    bob: openai.OpenAI,
    alice_job: str,
    tiny_model: Path,
    preference_rows: list[dict[str, str]],
) -> None:
    """One job trains at a time, two unfinished jobs per user (a paused one counts). Alice's job from her own
    fine-tuned model holds the slot."""
    fine_tuned = alice.fine_tuning.jobs.retrieve(alice_job).fine_tuned_model
    assert fine_tuned is not None
    alices_file = upload(alice, openai_preferences(preference_rows[:8]))
    running = alice.fine_tuning.jobs.create(
        model=fine_tuned, training_file=alices_file, method=dpo(n_epochs=500), extra_body={"trl": LONG}
    )
    wait_for(alice, running.id, lambda job: job.status == "running")
    bobs_file = upload(bob, openai_preferences(preference_rows[:8]))
    bobs = bob.fine_tuning.jobs.create(model=str(tiny_model), training_file=bobs_file, method=dpo())
    assert bobs.status == "queued"
    assert bob.fine_tuning.jobs.pause(bobs.id).status == "paused"  # out of the queue, still his
    bobs_second = bob.fine_tuning.jobs.create(model=str(tiny_model), training_file=bobs_file, method=dpo())
    with pytest.raises(openai.RateLimitError) as caught:
        bob.fine_tuning.jobs.create(model=bobs.model, training_file=bobs_file, method=dpo())
    assert caught.value.body["param"] == "max_queued_jobs_per_user"  # type: ignore[index]
    assert "2 of your jobs are queued, paused or running" in caught.value.message
    alices = alice.fine_tuning.jobs.create(model=fine_tuned, training_file=alices_file, method=dpo())  # her own queue
    assert alices.status == "queued"

    for change in (bob.fine_tuning.jobs.cancel, bob.fine_tuning.jobs.pause):
        with pytest.raises(openai.NotFoundError):
            change(alices.id)
    assert {job.id for job in bob.fine_tuning.jobs.list()} == {bobs.id, bobs_second.id}
    assert alice.fine_tuning.jobs.retrieve(alices.id).status == "queued"

    for client, job_id in ((alice, alices.id), (alice, running.id), (bob, bobs.id), (bob, bobs_second.id)):
        client.fine_tuning.jobs.cancel(job_id)
        assert wait_final(client, job_id).status == "cancelled"


def test_owners_survive_a_restart(
    users_server: StackServer, alice: openai.OpenAI, bob: openai.OpenAI, alice_job: str
) -> None:
    users_server.stop()
    users_server.start()
    assert alice.fine_tuning.jobs.retrieve(alice_job).status == "succeeded"
    assert alice_job not in [job.id for job in bob.fine_tuning.jobs.list()]
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.retrieve(alice_job)


def test_the_docs_several_users_example_is_a_server_auth_section_ogx_accepts() -> None:
    section = (REPO_ROOT / "docs" / "ogx.md").read_text().split("\n## Several users\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    auth = AuthenticationConfig.model_validate(yaml.safe_load(example)["server"]["auth"])
    assert auth.provider_config is not None and auth.provider_config.type == "custom"
    assert auth.access_policy[2].permit is not None and auth.access_policy[2].permit.resource == "fine_tuning_job::*"
