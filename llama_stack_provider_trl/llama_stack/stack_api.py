"""The only module that imports from ``llama_stack_api`` (and from Llama Stack's server core).

Everything the provider needs from Llama Stack's API package, and the access control it applies to its
resources, is re-exported here, so serving the same protocol on another Llama Stack release means changing
this one file.
"""

from http import HTTPStatus

import httpx
from llama_stack.core.access_control.access_control import AccessDeniedError, is_action_allowed
from llama_stack.core.access_control.datatypes import AccessRule, Action
from llama_stack.core.datatypes import User
from llama_stack.core.request_headers import get_authenticated_user
from llama_stack_api import (
    Api,
    CancelTrainingJobRequest,
    Checkpoint,
    ConflictError,
    DatasetIO,
    DatasetNotFoundError,
    Datasets,
    DPOAlignmentConfig,
    DPOLossType,
    GetModelRequest,
    GetTrainingJobArtifactsRequest,
    GetTrainingJobStatusRequest,
    InlineProviderSpec,
    IterRowsRequest,
    JobStatus,
    ListPostTrainingJobsResponse,
    ModelNotFoundError,
    Models,
    PostTrainingJob,
    PostTrainingJobArtifactsResponse,
    PostTrainingJobStatusResponse,
    PostTrainingMetric,
    PreferenceOptimizeRequest,
    ProviderSpec,
    ResourceNotFoundError,
    SupervisedFineTuneRequest,
    TrainingConfig,
)
from llama_stack_api.datasets.models import GetDatasetRequest

__all__ = [
    "AccessDeniedError",
    "AccessRule",
    "Action",
    "Api",
    "BadRequestError",
    "CancelTrainingJobRequest",
    "Checkpoint",
    "ConflictError",
    "DPOAlignmentConfig",
    "DPOLossType",
    "DatasetIO",
    "DatasetNotFoundError",
    "Datasets",
    "FieldDatasetNotFoundError",
    "GetDatasetRequest",
    "GetModelRequest",
    "GetTrainingJobArtifactsRequest",
    "GetTrainingJobStatusRequest",
    "InlineProviderSpec",
    "InsufficientStorageError",
    "IterRowsRequest",
    "JobNotFoundError",
    "JobStatus",
    "ListPostTrainingJobsResponse",
    "ModelNotFoundError",
    "Models",
    "NotImplementedByProviderError",
    "PayloadTooLargeError",
    "PostTrainingJob",
    "PostTrainingJobArtifactsResponse",
    "PostTrainingJobStatusResponse",
    "PostTrainingMetric",
    "PreferenceOptimizeRequest",
    "ProviderSpec",
    "ResourceNotFoundError",
    "SupervisedFineTuneRequest",
    "TrainingConfig",
    "User",
    "get_authenticated_user",
    "is_action_allowed",
    "stack_error",
]


# Llama Stack 0.6.1's server registers its error handler for a few exception classes and, separately, for
# Exception. Starlette re-raises anything that reaches the Exception handler after answering, and uvicorn then
# drops the client's keep-alive connection (the client stalls before its next request). So every error this
# provider raises derives from a class with a registered handler (ConflictError, ResourceNotFoundError) and
# sets its own status_code, which the handler answers with.


class BadRequestError(ConflictError):
    """A request field is invalid (HTTP 400)."""

    status_code = httpx.codes.BAD_REQUEST


class PayloadTooLargeError(ConflictError):
    """A request or its dataset is larger than the provider accepts (HTTP 413)."""

    status_code = httpx.codes.REQUEST_ENTITY_TOO_LARGE


class InsufficientStorageError(ConflictError):
    """The provider cannot record the job: its job store is not writable (HTTP 507)."""

    status_code = httpx.codes.INSUFFICIENT_STORAGE


class NotImplementedByProviderError(ConflictError):
    """The provider does not implement this endpoint (HTTP 501)."""

    status_code = httpx.codes.NOT_IMPLEMENTED


class JobNotFoundError(ResourceNotFoundError):
    def __init__(self, job_uuid: str) -> None:
        super().__init__(job_uuid, "Training job", "alpha.post_training.job.list", resource_name_plural="training jobs")


class FieldDatasetNotFoundError(DatasetNotFoundError):
    """A dataset a request field names does not exist (HTTP 404); the message names the field."""

    def __init__(self, field: str, dataset_id: str) -> None:
        super().__init__(dataset_id)
        self.args = (f"{field}: {self.args[0]}",)


def stack_error(status: HTTPStatus, message: str) -> ConflictError | ResourceNotFoundError:
    """The error this server answers with ``status`` and ``message`` without dropping the connection."""
    for error_class in (BadRequestError, PayloadTooLargeError, InsufficientStorageError, NotImplementedByProviderError):
        if error_class.status_code == status:
            return error_class(message)
    error = ConflictError(message)
    error.status_code = status
    return error
