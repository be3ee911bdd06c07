"""On a CUDA machine: device auto-detection, bf16 autocast, and a cancel that gives the GPU back.

Skipped where there is no GPU (CI has none); run on a GPU box with `pytest tests/test_gpu.py`.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from llama_stack_client import LlamaStackClient
from transformers import AutoModelForCausalLM

from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import RUN_YAML
from helpers import dpo_request, register_rows, unique, wait_final, wait_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def gpu_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaStackClient]:
    home = tmp_path_factory.mktemp("gpu-home")
    env = {"HOME": str(home), "TRL_OUTPUT_DIR": str(home / "jobs"), "TRL_DEVICE": "auto", "HF_HUB_OFFLINE": "1"}
    with StackServer(RUN_YAML, home / "server.log", env=env) as server:
        yield LlamaStackClient(base_url=server.base_url, max_retries=0, timeout=60)


def _gpu_pids() -> set[int]:
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout
    return {int(line) for line in out.split()}


def test_auto_device_trains_on_cuda_in_bf16(
    gpu_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(gpu_client, preference_rows)
    job_uuid = unique("gpu")
    gpu_client.alpha.post_training.preference_optimize(**dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=2))

    status = wait_final(gpu_client, job_uuid)

    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert (resources["device"], resources["precision"]) == ("cuda", "bf16")
    trained = AutoModelForCausalLM.from_pretrained(status.checkpoints[-1].path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert any(not torch.equal(p, base.state_dict()[n]) for n, p in trained.state_dict().items())


def test_cancel_gives_the_gpu_back(
    gpu_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(gpu_client, preference_rows)
    job_uuid = unique("gpu-cancel")
    request = dpo_request(job_uuid, tiny_model, dataset_id, n_epochs=100, max_steps_per_epoch=None, batch_size=1)
    gpu_client.alpha.post_training.preference_optimize(**request)
    running = wait_for(gpu_client, job_uuid, lambda s: (s.resources_allocated["step"] or 0) >= 2)
    pid = running.resources_allocated["pid"]
    assert pid in _gpu_pids()

    gpu_client.alpha.post_training.job.cancel(job_uuid=job_uuid)

    assert wait_final(gpu_client, job_uuid, timeout_s=60).status == "cancelled"
    assert pid not in _gpu_pids()
