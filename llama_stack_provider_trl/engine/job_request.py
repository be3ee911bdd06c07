"""A training request in no front door's terms: what admission checks and turns into a job spec, and what
admission reads through the front door (``RequestSources``) and knows of the caller (``Caller``).

A front door (``llama_stack/stack_requests.py``, ``ogx/fine_tuning.py``) fills one from its API's request. Every
value travels with the caller's name for it (``Given.field``: 0.6.1 says
``training_config.data_config.batch_size``), so each refusal names the field the caller sent. ``None`` means the
caller did not set the value, and the provider config's default applies: a front door sets only what its caller
really asked for, not what its schema fills in.

Fields are listed in the order admission checks them. The fields of one algorithm are its own ``MethodRequest``
(algorithms/<name>.py), in ``method``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Given[T]:
    """A value the caller sent, and the caller's name for its field."""

    value: T
    field: str


@dataclass(frozen=True, kw_only=True)
class MethodRequest:
    """The request's fields of one algorithm: each algorithm's module defines its own, named by ``algorithm``."""

    algorithm: ClassVar[str]


@dataclass(frozen=True, kw_only=True)
class TrackerRequest:
    """One experiment tracker the caller asks for: 0.6.1's ``logger_config.<name>``, OGX's ``integrations[i]``."""

    name: Given[str]  # tensorboard, mlflow or wandb
    options: Given[Any]  # an object of the tracker's options; {} or true: its defaults; false or None: off


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    job_uuid: Given[str]
    model: Given[str]
    method: MethodRequest  # the algorithm (which recipe trains the job) and its own fields
    # training loop
    n_epochs: Given[int]
    max_steps_per_epoch: Given[int] | None = None  # None: every batch of every epoch
    gradient_accumulation_steps: Given[int] | None = None  # None: 1
    # data. dataset_id holds "" when the caller gave none (its field then names what is missing)
    dataset_id: Given[str]
    batch_size: Given[int]
    shuffle: Given[bool] | None = None  # None: shuffled
    data_format: Given[str] | None = None  # instruct (strings) or dialog (messages); None: read from the rows
    validation_dataset_id: Given[str] | None = None
    # optimizer: None takes the provider config's value
    optimizer: Given[str] | None = None  # adamw, adam or sgd; None: adamw
    learning_rate: Given[float] | None = None
    weight_decay: Given[float] | None = None
    warmup_steps: Given[int] | None = None
    # memory and precision
    gradient_checkpointing: Given[bool] | None = None
    activation_offloading: Given[bool] | None = None
    fsdp: Given[bool] | None = None  # any FSDP option: this engine trains on one device
    dtype: Given[str] | None = None  # bf16, fp16 or fp32 (or their torch names); None: config mixed_precision
    # provider config fields marked PER_JOB, overridden for this job only
    overrides: Given[dict[str, Any]] = Given({}, "hyperparam_search_config")
    trackers: tuple[TrackerRequest, ...] = ()  # experiment trackers (engine/trackers.py)


class RequestSources(Protocol):
    """What admission reads through the front door: its stack's registered models and datasets."""

    async def registered_model_path(self, model: str) -> str | None:
        """The files of the model registered as ``model`` (a directory or a Hub id); None if none is."""
        ...

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of the dataset; raises the front door's not-found error naming the field."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who sends the request, as far as admission needs to know: whose earlier jobs it may train from, and how many
    of its jobs are unfinished (queued, paused or running). The front door answers both from its own authentication
    and access control. The default knows no users: every job is readable and none counts against a per-user limit."""

    may_read_job: Callable[[str], bool] = lambda _: True
    unfinished_jobs: Callable[[], int] = lambda: 0


NO_USERS = Caller()
