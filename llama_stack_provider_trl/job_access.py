"""Who may see and act on a training job: Llama Stack's own access control, applied to jobs.

A job is a protected resource of type ``post_training_job`` (``post_training_job::<job_uuid>`` in an
access rule), owned by the authenticated user whose request started it. The server's
``server.auth.access_policy`` decides with Llama Stack's ``is_action_allowed``, exactly as for the models and
datasets in its registry: without rules, the owner, and users who share one of the owner's roles, teams,
projects or namespaces, may do everything, and a job without an owner (started on a server without
authentication, or recorded before jobs had owners) is open to every user. Without authentication every
caller may do everything.

Actions: ``create`` to start a job, ``read`` to list it and see its status and artifacts, ``update`` to
cancel it (the record stays; its state changes).
"""

from dataclasses import dataclass

from llama_stack_provider_trl.engine.job_record import JobOwner, JobRecord
from llama_stack_provider_trl.stack_api import (
    AccessDeniedError,
    AccessRule,
    Action,
    User,
    get_authenticated_user,
    is_action_allowed,
)

JOB_RESOURCE_TYPE = "post_training_job"


@dataclass(frozen=True)
class TrainingJobResource:
    """A job as Llama Stack's access rules see it (its ProtectedResource protocol)."""

    identifier: str
    owner: User | None
    type: str = JOB_RESOURCE_TYPE


class JobAccess:
    def __init__(self, policy: list[AccessRule]) -> None:
        self.policy = policy

    @staticmethod
    def caller() -> JobOwner | None:
        """The authenticated user of the request being served; None when the server authenticates no one."""
        user = get_authenticated_user()
        return None if user is None else JobOwner(principal=user.principal, attributes=user.attributes)

    def allows(self, action: Action, job_uuid: str, owner: JobOwner | None) -> bool:
        return is_action_allowed(self.policy, action, _resource(job_uuid, owner), get_authenticated_user())

    def may_read(self, record: JobRecord) -> bool:
        return self.allows(Action.READ, record.job_uuid, record.owner)

    def require(self, action: Action, job_uuid: str, owner: JobOwner | None) -> None:
        """Raise Llama Stack's own AccessDeniedError (HTTP 403) unless the caller may do ``action``."""
        if not self.allows(action, job_uuid, owner):
            raise AccessDeniedError(action, _resource(job_uuid, owner), get_authenticated_user())


def _resource(job_uuid: str, owner: JobOwner | None) -> TrainingJobResource:
    as_user = None if owner is None else User(principal=owner.principal, attributes=owner.attributes)
    return TrainingJobResource(identifier=job_uuid, owner=as_user)
