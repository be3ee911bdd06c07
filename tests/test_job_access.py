"""Jobs under Llama Stack's access policy, decided by its own is_action_allowed: owners, unowned records, rules."""

import re
from pathlib import Path

import pytest
import yaml
from llama_stack.core.datatypes import AuthenticationConfig
from llama_stack.core.request_headers import RequestProviderDataContext

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.job_record import JobOwner, JobRecord
from llama_stack_provider_trl.llama_stack.access import job_access
from llama_stack_provider_trl.llama_stack.stack_api import AccessDeniedError, AccessRule, Action, User

from conftest import REPO_ROOT
from job_fixtures import make_spec

ALICE = JobOwner(principal="alice", attributes={"teams": ["red"]})


@pytest.fixture
def spec_json(tmp_path: Path) -> str:
    return make_spec(tmp_path, "job").model_dump_json()


def _may_read(policy: list[AccessRule], record: JobRecord, caller: User | None) -> bool:
    with RequestProviderDataContext(user=caller):
        return job_access(policy).may_read(record)


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


def test_a_policy_that_denies_an_action_is_llama_stacks_own_403_naming_the_action_and_the_job() -> None:
    readers = [AccessRule(permit={"actions": ["read"], "resource": "post_training_job::*"})]
    with RequestProviderDataContext(user=User(principal="carol", attributes={"roles": ["auditor"]})):
        access = job_access(readers)
        access.require(Action.READ, "job-1", ALICE)
        for action in (Action.CREATE, Action.UPDATE):
            with pytest.raises(AccessDeniedError, match=f"'carol'.*cannot perform action '{action}'.*job-1"):
                access.require(action, "job-1", ALICE)


def test_the_readmes_several_users_example_is_a_run_yaml_that_llama_stack_and_the_provider_accept() -> None:
    readme = (REPO_ROOT / "README.md").read_text().split("## Several users", 1)[1]
    [example] = re.findall(r"```yaml\n(.*?)```", readme.split("\n## ", 1)[0], flags=re.DOTALL)
    run_yaml = yaml.safe_load(example)

    auth = AuthenticationConfig.model_validate(run_yaml["server"]["auth"])
    [provider] = run_yaml["providers"]["post_training"]
    config = TrlPostTrainingConfig.model_validate(provider["config"])
    assert auth.provider_config.type == "custom" and auth.access_policy[2].permit.resource == "post_training_job::*"
    assert config.allowed_model_dirs == ["/srv/models"] and config.max_queued_jobs_per_user == 2
