import time
import uuid
from collections.abc import Callable
from typing import Any

from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.requests import dpo_request

__all__ = ["dpo_request"]

FINAL = {"completed", "failed", "cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_rows(client: LlamaStackClient, rows: list[dict[str, Any]]) -> str:
    dataset_id = unique("prefs")
    client.beta.datasets.register(
        purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
    )
    return dataset_id


def wait_for(
    client: LlamaStackClient, job_uuid: str, done: Callable[[Any], bool], timeout_s: float = 300, poll_s: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.alpha.post_training.job.status(job_uuid=job_uuid)
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_uuid} still {status.status}: {status.resources_allocated}")
        time.sleep(poll_s)


def wait_final(client: LlamaStackClient, job_uuid: str, timeout_s: float = 300) -> Any:
    return wait_for(client, job_uuid, lambda s: s.status in FINAL, timeout_s)


def process_gone(pid: int) -> bool:
    """True once no process with this pid exists (or only a zombie nobody will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True
