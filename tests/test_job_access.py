"""Jobs under Llama Stack's access policy, decided by its own is_action_allowed: owners, unowned records, rules."""

from pathlib import Path

import pytest
from llama_stack.core.request_headers import RequestProviderDataContext

from llama_stack_provider_trl.engine.job_record import JobOwner, JobRecord
from llama_stack_provider_trl.job_access import JobAccess
from llama_stack_provider_trl.stack_api import AccessRule, Action, User

from job_fixtures import make_spec

ALICE = JobOwner(principal="alice", attributes={"teams": ["red"]})


@pytest.fixture
def spec_json(tmp_path: Path) -> str:
    return make_spec(tmp_path, "job").model_dump_json()


def _may_read(policy: list[AccessRule], record: JobRecord, caller: User | None) -> bool:
    with RequestProviderDataContext(user=caller):
        return JobAccess(policy).may_read(record)


def test_a_record_from_before_owners_is_unowned_and_readable_as_the_stack_reads_unowned_resources(
    spec_json: str,
) -> None:
    old = JobRecord.model_validate_json(f'{{"spec": {spec_json}, "status": "completed"}}')
    bob = User(principal="bob", attributes={"teams": ["blue"]})

    assert old.owner is None
    assert _may_read([], old, bob)  # the stack's default policy: "resource is unowned" permits
    only_owners = [AccessRule(permit={"actions": ["read"]}, when="user is owner")]
    assert not _may_read(only_owners, old, bob)


def test_the_default_policy_lets_the_owner_and_the_owners_team_read_and_no_one_else(spec_json: str) -> None:
    record = JobRecord.model_validate_json(f'{{"spec": {spec_json}}}').model_copy(update={"owner": ALICE})

    assert _may_read([], record, User(principal="alice", attributes=None))
    assert _may_read([], record, User(principal="erin", attributes={"teams": ["red"]}))
    assert not _may_read([], record, User(principal="bob", attributes={"teams": ["blue"]}))
    assert _may_read([], record, None)  # no authentication: every caller


def test_a_rule_names_jobs_as_post_training_job_resources(spec_json: str) -> None:
    record = JobRecord.model_validate_json(f'{{"spec": {spec_json}}}').model_copy(update={"owner": ALICE})
    auditors = [
        AccessRule(
            permit={"actions": [Action.READ], "resource": f"post_training_job::{record.job_uuid}"},
            when="user with auditor in roles",
        )
    ]
    assert _may_read(auditors, record, User(principal="carol", attributes={"roles": ["auditor"]}))
    assert not _may_read(auditors, record, User(principal="bob", attributes={"roles": ["user"]}))
