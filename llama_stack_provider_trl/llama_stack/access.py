"""Who may see and act on a training job on Llama Stack 0.6.1: its own access control (``is_action_allowed``,
``server.auth.access_policy``, ``AccessDeniedError``) applied to jobs as ``post_training_job`` resources
(``post_training_job::<job_uuid>`` in an access rule). The rule itself is engine/job_access.py's, shared with OGX.
"""

from llama_stack_provider_trl.engine.job_access import AccessControl, JobAccess
from llama_stack_provider_trl.engine.job_record import JobOwner
from llama_stack_provider_trl.llama_stack.stack_api import (
    AccessDeniedError,
    AccessRule,
    User,
    get_authenticated_user,
    is_action_allowed,
)

LLAMA_STACK_ACCESS = AccessControl(
    resource_type="post_training_job",
    is_action_allowed=is_action_allowed,
    authenticated_user=get_authenticated_user,
    as_user=lambda owner: User(principal=owner.principal, attributes=owner.attributes),
    as_owner=lambda user: JobOwner(principal=user.principal, attributes=user.attributes),
    access_denied=AccessDeniedError,
)


def job_access(policy: list[AccessRule]) -> JobAccess:
    """Jobs under the server's ``server.auth.access_policy``."""
    return JobAccess(policy, LLAMA_STACK_ACCESS)
