"""What an algorithm is to the rest of the provider: one module (algorithms/<name>.py) holding its request fields,
its checks, its job spec, the names of its metrics and its recipe, registered in algorithms/__init__.py.

Admission (engine/admission.py) checks what every job shares (the model, the data source, the bounds, the devices,
the disk, the queue) and asks the job's algorithm for the rest, in this order:

1. ``check_fields(method)`` right after the model: the algorithm's own request fields, before any I/O;
2. ``settings(request, job, shared)`` once the shared settings are resolved: the algorithm's job spec fields (it
   may replace a shared one, as SFT's request LoRA replaces the provider config's);
3. ``rows(request, config, sources)``: the training and validation rows, read and checked;
4. ``finish(request, settings, model, rows)`` once the model's files and the rows are known (SFT maps LoRA layer
   names, GRPO checks the batch against the prompts).

The training process reads the job spec (``spec_type``) and runs ``recipe_module``; the server shows
``shown(spec, setup)`` in a job's status and draws ``metrics`` (curves.png, OGX's result file and events).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llama_stack_provider_trl.common.job_spec import JobSpecBase
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.curves import Panel
from llama_stack_provider_trl.engine.job_request import JobRequest, MethodRequest, RequestSources


@dataclass(frozen=True)
class MetricNames:
    """The metrics a job of the algorithm logs (TRL's names) that people see beyond the loss and learning rate."""

    panels: tuple[Panel, ...]  # curves.png, after the loss panel
    result_columns: dict[str, str]  # OGX's result CSV: column -> TRL's logged name (valid_* after valid_loss)
    event_names: dict[str, str] = field(default_factory=dict)  # OGX's metrics events: OpenAI-like name -> TRL's
    # OGX's result CSV, a column per logged name that matches: column template ("{}": the regex's group) -> regex
    result_patterns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRows:
    """A request's rows as the job trains on them, and what the chat-template check needs to know of them."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    conversational: bool  # lists of messages: the tokenizer must have a chat template
    strings: str  # the rows' string form, named when a conversational dataset cannot be rendered


class Algorithm(ABC):
    name: ClassVar[str]  # job.json's algorithm, MethodRequest.algorithm
    title: ClassVar[str]  # in messages: "DPO"
    spec_type: ClassVar[type[JobSpecBase]]
    recipe_module: ClassVar[str]  # python -m <recipe_module> <job_dir>
    metrics: ClassVar[MetricNames]
    config_fields: ClassVar[frozenset[str]] = frozenset()  # provider config keys only this algorithm reads

    @abstractmethod
    def check_fields(self, method: MethodRequest) -> None:
        """Check the algorithm's own request fields (no I/O); raise RequestError naming the field."""

    @abstractmethod
    def settings(self, request: JobRequest, job: TrlPostTrainingConfig, shared: dict[str, Any]) -> dict[str, Any]:
        """The algorithm's job spec fields, and shared ones it decides otherwise (``job``: the provider config with
        the request's overrides; ``shared``: the shared settings resolved, device to trackers)."""

    @abstractmethod
    async def rows(self, request: JobRequest, config: TrlPostTrainingConfig, sources: RequestSources) -> TrainingRows:
        """The request's training and validation rows, read through ``sources`` and checked."""

    def finish(  # noqa: B027
        self, request: JobRequest, settings: dict[str, Any], model: str, rows: TrainingRows
    ) -> None:
        """Settings that depend on the model's files or the rows, once ``model`` is a local directory or a Hub id
        (by default: none)."""

    @abstractmethod
    def shown(self, spec: Any, setup: dict[str, Any]) -> dict[str, Any]:
        """The algorithm's settings as a job's status shows them (``setup``: what the recipe resolved)."""
