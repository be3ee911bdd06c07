"""Who may see and act on a training job: one rule for both front doors, decided by the front door's own framework.

A job is a protected resource (``<resource_type>::<job id>`` in an access rule: ``post_training_job`` on Llama
Stack, ``fine_tuning_job`` on OGX), owned by the authenticated user whose request started it. The framework's
``is_action_allowed`` decides under the server's ``server.auth.access_policy``, exactly as for the resources in its
own registry: without rules, the owner, and users who share one of the owner's roles, teams, projects or namespaces,
may do everything, and a job without an owner (started on a server without authentication, or recorded before jobs
had owners) is open to every user. Without authentication every caller may do everything.

Actions: ``create`` to start a job, ``read`` to list it and see its status, events and artifacts, ``update`` to
cancel, pause or resume it (the record stays; its state changes). A job the caller may not read is answered as one
that does not exist; one it may read but not change is the framework's own AccessDeniedError (403).

Nothing here imports a framework: the front door hands over its functions as an ``AccessControl``.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from llama_stack_provider_trl.engine.job_record import FINAL_STATES, JobOwner, JobRecord, same_user
from llama_stack_provider_trl.engine.job_request import Caller
from llama_stack_provider_trl.engine.jobs import JobManager, JobNotFound

# The frameworks' Action enums are StrEnums: these strings are their members' values.
JobAction = Literal["create", "read", "update"]


@dataclass(frozen=True)
class AccessControl:
    """A framework's access control, as its front door hands it over."""

    resource_type: str
    is_action_allowed: Callable[[list[Any], Any, Any, Any], bool]  # (policy, action, resource, user)
    authenticated_user: Callable[[], Any]  # the user of the request being served; None without authentication
    as_user: Callable[[JobOwner], Any]  # a job's owner as the framework's User
    as_owner: Callable[[Any], JobOwner]  # the framework's User as a job's owner
    access_denied: Callable[[Any, Any, Any], Exception]  # the framework's 403: (action, resource, user)


@dataclass(frozen=True)
class TrainingJobResource:
    """A job as the framework's access rules see it (its ProtectedResource protocol)."""

    identifier: str
    owner: Any
    type: str


class JobAccess:
    def __init__(self, policy: list[Any], control: AccessControl) -> None:
        self.policy = policy
        self.control = control

    def caller(self) -> JobOwner | None:
        """The authenticated user of the request being served; None when the server authenticates no one."""
        user = self.control.authenticated_user()
        return None if user is None else self.control.as_owner(user)

    def allows(self, action: JobAction, job_uuid: str, owner: JobOwner | None) -> bool:
        user = self.control.authenticated_user()
        return self.control.is_action_allowed(self.policy, action, self._resource(job_uuid, owner), user)

    def may_read(self, record: JobRecord) -> bool:
        return self.allows("read", record.job_uuid, record.owner)

    def visible(self, records: Iterable[JobRecord]) -> list[JobRecord]:
        return [record for record in records if self.may_read(record)]

    def require(self, action: JobAction, job_uuid: str, owner: JobOwner | None) -> None:
        """Raise the framework's own AccessDeniedError (HTTP 403) unless the caller may do ``action``."""
        if not self.allows(action, job_uuid, owner):
            resource = self._resource(job_uuid, owner)
            raise self.control.access_denied(action, resource, self.control.authenticated_user())

    def admission_caller(self, jobs: JobManager, owner: JobOwner | None) -> Caller:
        """The caller as admission sees it: the earlier jobs it may train from, and its own unfinished jobs (every
        caller is one user without authentication)."""

        def may_read_job(job_uuid: str) -> bool:
            try:
                return self.may_read(jobs.get(job_uuid))
            except JobNotFound:
                return False

        return Caller(may_read_job=may_read_job, unfinished_jobs=lambda: unfinished_jobs(jobs, owner))

    def _resource(self, job_uuid: str, owner: JobOwner | None) -> TrainingJobResource:
        as_user = None if owner is None else self.control.as_user(owner)
        return TrainingJobResource(identifier=job_uuid, owner=as_user, type=self.control.resource_type)


def unfinished_jobs(jobs: JobManager, owner: JobOwner | None, besides: str | None = None) -> int:
    """How many of ``owner``'s jobs are queued, paused or running (other than ``besides``): what a per-user limit
    counts, so that pausing jobs frees no room for more."""
    return sum(
        r.status not in FINAL_STATES and r.job_uuid != besides and same_user(r.owner, owner) for r in jobs.list()
    )
