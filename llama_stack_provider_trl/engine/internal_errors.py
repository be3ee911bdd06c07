"""An error no check foresaw, answered as a 500 that says nothing internal and logged under an id that finds it.

A front door answers every error it means to (a RequestError, a job that is not found, a policy's refusal) in its
own API's shape. Anything else is a fault of the server, and its text (an exception's type, a path, a value) is not
the caller's to read: the caller gets ``internal error <id>``, and the server's log the same id with the traceback.
"""

import logging
import uuid

logger = logging.getLogger(__name__)


def report_internal_error(exc: BaseException, action: str) -> str:
    """Log ``exc`` under a fresh id; return the message the caller gets."""
    error_id = uuid.uuid4().hex[:12]
    logger.error("internal error %s during %s", error_id, action, exc_info=exc)
    return (
        f"internal error {error_id}: the server could not {action}; its operator finds the cause in the server's log "
        "under this id"
    )
