"""A burst of malformed requests over one keep-alive connection: each is a 4xx naming the field, the
connection survives every one, and afterwards the server is healthy and a valid job still completes."""

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer

from helpers import dpo_request, register_rows, unique, wait_final

Request = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Request], None]:
    def change(request: Request) -> None:
        *parents, last = path.split(".")
        node = request
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _drop(path: str) -> Callable[[Request], None]:
    def change(request: Request) -> None:
        *parents, last = path.split(".")
        node = request
        for key in parents:
            node = node[key]
        del node[last]

    return change


TC = "training_config"
DC = "training_config.data_config"
OC = "training_config.optimizer_config"
# (what is wrong, HTTP status, text the message must contain: the field)
CASES: list[tuple[Callable[[Request], None], int, str]] = [
    (_set("job_uuid", ""), 400, "job_uuid"),
    (_set("job_uuid", "../escape"), 400, "job_uuid"),
    (_set("job_uuid", "a/b"), 400, "job_uuid"),
    (_set("job_uuid", ".."), 400, "job_uuid"),
    (_set("job_uuid", "x" * 100_000), 400, "job_uuid"),
    (_set("finetuned_model", " "), 400, "finetuned_model"),
    # missing, elsewhere or no model: one answer, so that no request probes the server's paths
    (_set("finetuned_model", "/no/such/model/dir"), 403, "finetuned_model: '/no/such/model/dir' is not a model dir"),
    (_set("finetuned_model", "/etc"), 403, "finetuned_model: '/etc' is not a model directory this server trains from"),
    (_set("finetuned_model", "../../../../root"), 403, "finetuned_model: '../../../../root' is not a model directory"),
    (_set("finetuned_model", "/" + "a" * 300), 400, "finetuned_model"),
    (_set("finetuned_model", "org/" + "m" * 10_000), 413, "finetuned_model"),
    (_set("algorithm_config.beta", 0.0), 400, "algorithm_config.beta"),
    (_set("algorithm_config.beta", 1e9), 400, "algorithm_config.beta"),
    (_set("algorithm_config.loss_type", "kto_pair"), 400, "algorithm_config.loss_type"),
    (_set(f"{TC}.n_epochs", 0), 400, f"{TC}.n_epochs"),
    (_set(f"{TC}.n_epochs", 10**9), 400, f"{TC}.n_epochs"),
    (_set(f"{TC}.max_steps_per_epoch", 0), 400, f"{TC}.max_steps_per_epoch"),
    (_set(f"{TC}.max_steps_per_epoch", 10**12), 400, f"{TC}.max_steps_per_epoch"),
    (_set(f"{TC}.gradient_accumulation_steps", 0), 400, f"{TC}.gradient_accumulation_steps"),
    (_set(f"{TC}.gradient_accumulation_steps", 10**8), 400, f"{TC}.gradient_accumulation_steps"),
    (_set(f"{TC}.dtype", "int8"), 400, f"{TC}.dtype"),
    (_set(f"{TC}.dtype", "fp16"), 400, f"{TC}.dtype"),
    (_set(f"{DC}.batch_size", 0), 400, f"{DC}.batch_size"),
    (_set(f"{DC}.batch_size", 10**9), 400, f"{DC}.batch_size"),
    (_set(f"{DC}.packed", True), 400, f"{DC}.packed"),
    (_set(f"{DC}.train_on_input", True), 400, f"{DC}.train_on_input"),
    (_set(f"{DC}.validation_dataset_id", "other"), 404, f"{DC}.validation_dataset_id: Dataset 'other' not found"),
    (_set(f"{DC}.dataset_id", "d" * 1_000), 413, f"{DC}.dataset_id"),
    (_set(f"{DC}.dataset_id", "no-such-dataset"), 404, f"{DC}.dataset_id: Dataset 'no-such-dataset' not found"),
    (_drop(DC), 400, f"{TC}.data_config"),
    (_set(f"{OC}.lr", 0.0), 400, f"{OC}.lr"),
    (_set(f"{OC}.lr", 1e6), 400, f"{OC}.lr"),
    (_set(f"{OC}.weight_decay", -1.0), 400, f"{OC}.weight_decay"),
    (_set(f"{OC}.weight_decay", 1e6), 400, f"{OC}.weight_decay"),
    (_set(f"{OC}.num_warmup_steps", -3), 400, f"{OC}.num_warmup_steps"),
    (_set(f"{OC}.num_warmup_steps", 10**12), 400, f"{OC}.num_warmup_steps"),
    (_set(f"{TC}.efficiency_config", {"fsdp_cpu_offload": True}), 400, f"{TC}.efficiency_config"),
    (_set("hyperparam_search_config", {"trials": 3}), 400, "hyperparam_search_config"),
    (_set("logger_config", {"comet": True}), 400, "logger_config.comet: unknown tracker"),
    (_set(f"{TC}.n_epochs", "many"), 400, "n_epochs"),
    (_drop("algorithm_config.beta"), 400, "beta"),
]


@pytest.mark.slow
def test_malformed_requests_are_4xx_naming_the_field_and_the_server_stays_healthy(
    stack: StackServer, client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    dataset_id = register_rows(client, preference_rows)
    valid = dpo_request("placeholder", tiny_model, dataset_id)
    oversize_row = register_rows(client, [{"prompt": "p", "chosen": "c" * 250_000, "rejected": "r"}])
    bad_row = register_rows(client, [*preference_rows[:3], {"prompt": "p", "chosen": "c"}])
    cases = [
        *CASES,
        (_set(f"{DC}.dataset_id", oversize_row), 413, "row 0: field 'chosen' has 250000 characters"),
        (_set(f"{DC}.dataset_id", bad_row), 400, "row 3: field 'rejected' is missing"),
    ]
    jobs_root = Path(stack.env["TRL_OUTPUT_DIR"])
    before = set(jobs_root.iterdir())
    sockets = set()
    failures = []
    with httpx.Client(base_url=stack.base_url, headers={"Connection": "keep-alive"}, timeout=60) as http:
        for change, expected, field in cases:
            request = copy.deepcopy(valid) | {"job_uuid": unique("bad")}
            change(request)
            response = http.post("/v1alpha/post-training/preference-optimize", json=request)
            sockets.add(response.extensions["network_stream"].get_extra_info("socket").getsockname())
            if response.status_code != expected or field not in response.text:
                failures.append((field, response.status_code, response.text[:300]))
    assert failures == []
    assert len(sockets) == 1  # every 4xx left the keep-alive connection open
    assert set(jobs_root.iterdir()) == before  # nothing was created for a refused request

    assert stack.healthy()
    job_uuid = unique("valid-after")
    client.alpha.post_training.preference_optimize(**(valid | {"job_uuid": job_uuid}))
    assert wait_final(client, job_uuid).status == "completed"
