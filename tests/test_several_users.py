"""Several users on one server: Llama Stack's own authentication (``custom``, against a token endpoint this module
serves) and access policy decide who sees, reads and cancels which job, and which datasets and local models a job
may train from; one user cannot fill the queue."""

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_stack_client
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.token_endpoint import TokenEndpoint

from conftest import REPO_ROOT
from helpers import dpo_request, register_rows, unique, wait_final, wait_for
from job_fixtures import server_for

SERVER_PATHS = ("pid", "job_dir", "log_path", "curves")

USERS = {
    "alice-token": {"principal": "alice", "attributes": {"roles": ["user"]}},
    "bob-token": {"principal": "bob", "attributes": {"roles": ["user"]}},
    "carol-token": {"principal": "carol", "attributes": {"roles": ["auditor"]}},
    "dave-token": {"principal": "dave", "attributes": {"roles": ["admin"]}},
}
EVERY_ACTION = ["create", "read", "update", "delete"]
ACCESS_POLICY = [
    {"permit": {"actions": ["create"]}, "description": "anyone signed in registers datasets and starts jobs"},
    {"permit": {"actions": EVERY_ACTION}, "when": "user is owner", "description": "owners do everything"},
    {"permit": {"actions": EVERY_ACTION}, "when": "user with admin in roles", "description": "so do admins"},
    {
        "permit": {"actions": ["read"], "resource": "post_training_job::*"},
        "when": "user with auditor in roles",
        "description": "auditors see every training job",
    },
]
LONG = {"save_every_epoch": False}  # a job that trains for a while and writes nothing until it ends


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The one directory this server trains local models from: a model, a symlink out of it, a directory that
    holds no model."""
    root = tmp_path_factory.mktemp("allowed-models")
    shutil.copytree(tiny_model, root / "tiny")
    (root / "escape").symlink_to(tiny_model, target_is_directory=True)
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "notes.txt").write_text("no config.json here")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[StackServer]:
    with TokenEndpoint(USERS) as tokens:
        auth = {
            "provider_config": {"type": "custom", "endpoint": tokens.url},
            "access_policy": ACCESS_POLICY,
        }
        home = tmp_path_factory.mktemp("home-users")
        stack = server_for(
            home,
            auth=auth,
            max_concurrent_jobs=1,
            max_queued_jobs_per_user=2,  # unfinished: queued or running
            allowed_model_dirs=[str(models_root)],
        )
        with stack:
            yield stack


def _as(server: StackServer, principal: str) -> LlamaStackClient:
    [token] = [token for token, user in USERS.items() if user["principal"] == principal]
    return LlamaStackClient(base_url=server.base_url, api_key=token, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def alice(server: StackServer) -> LlamaStackClient:
    return _as(server, "alice")


@pytest.fixture(scope="module")
def bob(server: StackServer) -> LlamaStackClient:
    return _as(server, "bob")


@pytest.fixture(scope="module")
def alice_dataset(alice: LlamaStackClient, preference_rows: list[dict[str, str]]) -> str:
    return register_rows(alice, preference_rows[:8])


@pytest.fixture(scope="module")
def alice_job(alice: LlamaStackClient, models_root: Path, alice_dataset: str) -> str:
    """Alice's job, started from the model inside the allowed directory; left running for the first test."""
    job_uuid = unique("alice")
    alice.alpha.post_training.preference_optimize(
        **dpo_request(job_uuid, models_root / "tiny", alice_dataset, max_steps_per_epoch=2)
    )
    return job_uuid


def _not_found_message(call: Any, job_uuid: str) -> str:
    with pytest.raises(llama_stack_client.NotFoundError) as caught:
        call(job_uuid=job_uuid)
    return str(caught.value).replace(job_uuid, "<job>")


def test_the_server_warns_at_start_up_of_each_setting_a_shared_server_leaves_open(server: StackServer) -> None:
    log = " ".join(server.log_path.read_text().split())  # the server's console wraps long lines
    assert "TRL training on a shared server: hub_models is on" in log
    assert "allowed_model_dirs is unset" not in log and "max_queued_jobs_per_user is unset" not in log


def test_a_request_without_a_valid_token_is_401(server: StackServer) -> None:
    jobs_url = f"{server.base_url}/v1alpha/post-training/jobs"
    assert httpx.get(jobs_url).status_code == 401
    assert httpx.get(jobs_url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    anonymous = LlamaStackClient(base_url=server.base_url, max_retries=0, timeout=60)
    with pytest.raises(llama_stack_client.AuthenticationError):
        anonymous.alpha.post_training.job.list()


def test_another_user_can_neither_see_read_nor_cancel_a_job(
    alice: LlamaStackClient, bob: LlamaStackClient, alice_job: str
) -> None:
    job = bob.alpha.post_training.job
    unknown = unique("no-such-job")
    for call in (job.status, job.artifacts, job.cancel):
        # exactly what an unknown job gets: nothing tells bob that alice's job exists
        assert _not_found_message(call, alice_job) == _not_found_message(call, unknown)
    assert alice_job not in [j.job_uuid for j in job.list()]

    status = wait_final(alice, alice_job)
    assert status.status == "completed", status.resources_allocated["error"]
    # with auth, callers see no server path nor process id (show_server_paths: auto)
    assert {key: status.resources_allocated[key] for key in SERVER_PATHS} == dict.fromkeys(SERVER_PATHS)
    assert status.resources_allocated["trackers"] == {}
    assert alice_job in [j.job_uuid for j in alice.alpha.post_training.job.list()]
    assert alice.alpha.post_training.job.artifacts(job_uuid=alice_job).checkpoints
    assert alice_job not in [j.job_uuid for j in job.list()]


def test_a_job_cannot_train_on_a_dataset_its_user_may_not_read(
    bob: LlamaStackClient, models_root: Path, alice_dataset: str
) -> None:
    with pytest.raises(llama_stack_client.NotFoundError, match=alice_dataset):
        bob.alpha.post_training.preference_optimize(**dpo_request(unique("bob"), models_root / "tiny", alice_dataset))


def test_a_role_granted_read_access_sees_every_job_but_cannot_cancel_one(server: StackServer, alice_job: str) -> None:
    carol = _as(server, "carol")
    assert alice_job in [j.job_uuid for j in carol.alpha.post_training.job.list()]
    assert carol.alpha.post_training.job.status(job_uuid=alice_job).status == "completed"
    assert carol.alpha.post_training.job.artifacts(job_uuid=alice_job).checkpoints
    with pytest.raises(llama_stack_client.PermissionDeniedError, match="update"):
        carol.alpha.post_training.job.cancel(job_uuid=alice_job)


@pytest.mark.parametrize("model", ["/etc", "../../../../root", "escape"])
def test_a_local_model_outside_the_allowed_directories_is_refused(
    bob: LlamaStackClient, models_root: Path, preference_rows: list[dict[str, str]], model: str
) -> None:
    """``escape`` lies inside the allowed directory, but is a symlink to a model outside it."""
    dataset_id = register_rows(bob, preference_rows[:8])
    named = str(models_root / model) if model == "escape" else model
    with pytest.raises(llama_stack_client.PermissionDeniedError, match="allowed_model_dirs"):
        bob.alpha.post_training.preference_optimize(**dpo_request(unique("bob"), named, dataset_id))


def test_a_directory_without_a_model_is_400_naming_the_field(
    bob: LlamaStackClient, models_root: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(bob, preference_rows[:8])
    with pytest.raises(llama_stack_client.BadRequestError, match=r"finetuned_model: .*config\.json"):
        bob.alpha.post_training.preference_optimize(
            **dpo_request(unique("bob"), models_root / "not-a-model", dataset_id)
        )


def test_an_earlier_jobs_checkpoint_may_be_trained_from_by_its_owner_only(
    alice: LlamaStackClient, bob: LlamaStackClient, alice_job: str, alice_dataset: str
) -> None:
    [final] = alice.alpha.post_training.job.artifacts(job_uuid=alice_job).checkpoints[-1:]
    bob_dataset = register_rows(bob, [{"prompt": "p", "chosen": " c", "rejected": " r"}] * 4)
    with pytest.raises(llama_stack_client.PermissionDeniedError, match="allowed_model_dirs"):
        bob.alpha.post_training.preference_optimize(**dpo_request(unique("bob"), final.path, bob_dataset))
    # By its identifier, Alice's checkpoint is no checkpoint to Bob: the name stays a Hub id, as an unknown one does
    bobs = unique("bob")
    bob.alpha.post_training.preference_optimize(**dpo_request(bobs, final.identifier, bob_dataset))
    assert bob.alpha.post_training.job.status(job_uuid=bobs).resources_allocated["model"] == final.identifier
    bob.alpha.post_training.job.cancel(job_uuid=bobs)
    assert wait_final(bob, bobs).status in ("cancelled", "failed")

    again = unique("alice-again")
    alice.alpha.post_training.preference_optimize(**dpo_request(again, final.identifier, alice_dataset))
    assert alice.alpha.post_training.job.status(job_uuid=again).resources_allocated["model"] == final.path
    alice.alpha.post_training.job.cancel(job_uuid=again)
    assert wait_final(alice, again).status == "cancelled"


def test_one_user_cannot_fill_the_queue_and_an_admin_may_cancel_any_job(
    server: StackServer,
    alice: LlamaStackClient,
    bob: LlamaStackClient,
    models_root: Path,
    alice_dataset: str,
    preference_rows: list[dict[str, str]],
) -> None:
    model = models_root / "tiny"
    bob_dataset = register_rows(bob, preference_rows[:8])
    running, queued, refused = unique("bob-1"), unique("bob-2"), unique("bob-3")
    bob.alpha.post_training.preference_optimize(
        **dpo_request(
            running, model, bob_dataset, n_epochs=500, max_steps_per_epoch=None, hyperparam_search_config=LONG
        )
    )
    wait_for(bob, running, lambda s: s.status == "in_progress")
    bob.alpha.post_training.preference_optimize(**dpo_request(queued, model, bob_dataset))
    with pytest.raises(llama_stack_client.RateLimitError, match="max_queued_jobs_per_user"):
        bob.alpha.post_training.preference_optimize(**dpo_request(refused, model, bob_dataset))
    alices = unique("alice-queued")
    alice.alpha.post_training.preference_optimize(**dpo_request(alices, model, alice_dataset))  # her own queue

    dave = _as(server, "dave")
    for job_uuid in (queued, running, alices):
        dave.alpha.post_training.job.cancel(job_uuid=job_uuid)
    assert [wait_final(dave, j).status for j in (queued, running, alices)] == ["cancelled"] * 3
    with pytest.raises(llama_stack_client.NotFoundError):
        bob.alpha.post_training.job.status(job_uuid=refused)


def test_a_failed_jobs_error_names_the_servers_places_by_what_they_are_not_where_they_are(
    server: StackServer, bob: LlamaStackClient, preference_rows: list[dict[str, str]]
) -> None:
    job_uuid = unique("bob-hub")
    bob_dataset = register_rows(bob, preference_rows[:8])
    bob.alpha.post_training.preference_optimize(**dpo_request(job_uuid, "no-such-org/no-such-model", bob_dataset))

    status = wait_final(bob, job_uuid)

    error = status.resources_allocated["error"]
    assert status.status == "failed" and "no-such-org/no-such-model" in error, error
    assert "--- last lines of <job_dir>/train.log ---" in error
    assert 'File "<package>/llama_stack_provider_trl/recipes/' in error  # the traceback in the log's last lines
    for place in (sys.prefix, server.env["HOME"], str(REPO_ROOT)):
        assert place not in error


def test_owners_survive_a_restart(
    server: StackServer, alice: LlamaStackClient, bob: LlamaStackClient, alice_job: str
) -> None:
    server.stop()
    server.start()
    assert alice.alpha.post_training.job.status(job_uuid=alice_job).status == "completed"
    assert alice_job not in [j.job_uuid for j in bob.alpha.post_training.job.list()]
    with pytest.raises(llama_stack_client.NotFoundError):
        bob.alpha.post_training.job.status(job_uuid=alice_job)
