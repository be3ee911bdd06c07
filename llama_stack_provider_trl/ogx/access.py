"""Who may see and act on a fine-tuning job on OGX: OGX's own access control (``is_action_allowed``,
``server.auth.access_policy``, ``AccessDeniedError``) applied to jobs as ``fine_tuning_job`` resources
(``fine_tuning_job::<ftjob-...>`` in an access rule). The rule itself is engine/job_access.py's, shared with the
Llama Stack 0.6.1 face.
"""

from contextlib import AbstractContextManager

from ogx.core.access_control.access_control import AccessDeniedError, is_action_allowed
from ogx.core.access_control.datatypes import AccessRule
from ogx.core.datatypes import User
from ogx.core.request_headers import RequestProviderDataContext, get_authenticated_user

from llama_stack_provider_trl.engine.job_access import AccessControl, JobAccess
from llama_stack_provider_trl.engine.job_record import JobOwner


def _as_user(owner: JobOwner) -> User:
    return User(owner.principal, owner.attributes, tenant_id=owner.tenant_id)


OGX_ACCESS = AccessControl(
    resource_type="fine_tuning_job",
    is_action_allowed=is_action_allowed,
    authenticated_user=get_authenticated_user,
    as_user=_as_user,
    as_owner=lambda user: JobOwner(principal=user.principal, attributes=user.attributes, tenant_id=user.tenant_id),
    access_denied=AccessDeniedError,
)


def job_access(policy: list[AccessRule]) -> JobAccess:
    """Jobs under the server's ``server.auth.access_policy``."""
    return JobAccess(policy, OGX_ACCESS)


def acting_as(owner: JobOwner | None) -> AbstractContextManager[None]:
    """Calls into other OGX APIs made as the job's owner (nobody, for a job without one), not as whoever asked:
    what they store belongs to the owner."""
    return RequestProviderDataContext(user=None if owner is None else _as_user(owner))
