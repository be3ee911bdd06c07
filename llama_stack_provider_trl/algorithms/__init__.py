"""The algorithms this provider trains, one module each (algorithms/algorithm.py says what a module holds), found by
the name a request's method and a job's spec carry. Adding one: docs/algorithms.md.

Read by the server (admission, the job manager, status) and by the training process (its job spec); nothing here
imports the training libraries.
"""

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter

from llama_stack_provider_trl.algorithms.algorithm import Algorithm
from llama_stack_provider_trl.algorithms.dpo import DPO
from llama_stack_provider_trl.algorithms.grpo import GRPO
from llama_stack_provider_trl.algorithms.sft import SFT
from llama_stack_provider_trl.common.job_spec import JOB_SPEC_FILE, JobSpecBase

ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (DPO(), SFT(), GRPO())}


def algorithm_named(name: str) -> Algorithm:
    return ALGORITHMS[name]


def _algorithm(value: Any) -> str:
    # Records written before SFT existed carry no algorithm: they are DPO jobs.
    found = value.get("algorithm") if isinstance(value, dict) else getattr(value, "algorithm", None)
    return found or "dpo"


# Any algorithm's job spec, told apart by its ``algorithm`` field (a record's spec, job.json).
JobSpec = Annotated[
    Union[tuple(Annotated[a.spec_type, Tag(a.name)] for a in ALGORITHMS.values())],  # noqa: UP007
    Discriminator(_algorithm),
]
_JOB_SPEC: TypeAdapter[JobSpecBase] = TypeAdapter(JobSpec)


def parse_job_spec(data: str | bytes | dict[str, Any]) -> JobSpecBase:
    """A job spec of whichever algorithm it names (DPO when it names none)."""
    if isinstance(data, dict):
        return _JOB_SPEC.validate_python(data)
    return _JOB_SPEC.validate_json(data)


def read_job_spec(job_dir: str | Path) -> JobSpecBase:
    return parse_job_spec((Path(job_dir) / JOB_SPEC_FILE).read_text())
