"""One job on several processes (DDP over gloo on CPU) through the real server and client: same losses as one
process on the same global batch, every rank gone after cancel or a crashed rank, resume with the same world size;
and the same job as a Ray Train TorchTrainer on a real local Ray cluster (executor: ray)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from llama_stack_client import BadRequestError, LlamaStackClient
from transformers import AutoModelForCausalLM

from llama_stack_provider_trl.common.checkpoints import last_trainer_checkpoint
from llama_stack_provider_trl.common.job_spec import PAUSE_REQUEST_FILE, TENSORBOARD_DIR, LoraSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.demo.requests import sft_request
from llama_stack_provider_trl.demo.stack_server import free_port
from llama_stack_provider_trl.demo.toy_data import repeat_instructions
from llama_stack_provider_trl.engine.cpu_threads import threads_per_process, usable_cores
from llama_stack_provider_trl.engine.distributed import check_strategy_combination, resolve_num_processes
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.engine.jobs import JobManager
from llama_stack_provider_trl.engine.launch import (
    ACCELERATE_CONFIG_FILE,
    LAUNCHER_MODULE,
    accelerate_config,
    launch_command,
)

from helpers import (
    LORA,
    dpo_request,
    process_gone,
    register_rows,
    tensorboard_losses,
    unique,
    wait_final,
    wait_for,
    write_job,
)
from job_fixtures import client_for, kill_server, poll, server_for, session_members

CORES = usable_cores()
TRL_ACCELERATE_CONFIGS = Path(__import__("trl").__file__).parent / "accelerate_configs"


def two_processes(**extra: Any) -> dict[str, Any]:
    return {"num_processes": 2, "distributed_strategy": "ddp", "group_by_length": False, **extra}


def step_losses(job_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    return [e["metrics"]["loss"] for e in events if e["event"] == "metrics"]


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the training processes the job's launcher (accelerate/torchrun) started."""
    ranks = {}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            stat = (environ.parent / "stat").read_text().rsplit(") ", 1)[1].split()
            if int(stat[1]) != launcher_pid:
                continue
            variables = dict(v.split("=", 1) for v in environ.read_text().split("\0") if "=" in v)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in variables:
            ranks[int(variables["RANK"])] = int(environ.parent.name)
    return ranks


def start_long_job(
    client: LlamaStackClient, model: Path, rows: list[dict[str, str]], job_uuid: str, n_epochs: int = 50
) -> Any:
    """Submit a two-process job of many steps; its status once its first step is done."""
    request = dpo_request(
        job_uuid,
        model,
        register_rows(client, rows),
        n_epochs=n_epochs,
        max_steps_per_epoch=None,
        hyperparam_search_config=two_processes(),
    )
    client.alpha.post_training.preference_optimize(**request)
    status = wait_for(client, job_uuid, lambda s: s.resources_allocated["step"] >= 1 or s.status != "in_progress")
    assert status.status == "in_progress", status.resources_allocated["error"]
    return status


def running_ranks(
    client: LlamaStackClient, model: Path, rows: list[dict[str, str]], job_uuid: str, **kw: Any
) -> tuple[int, dict[int, int]]:
    """Start a long two-process job and wait until it trains on both ranks; (launcher pid, {rank: pid})."""
    launcher = start_long_job(client, model, rows, job_uuid, **kw).resources_allocated["pid"]
    return launcher, poll(lambda: (r := ranks_of(launcher)) and len(r) == 2 and r, what="both ranks")


def run_to_the_end(client: LlamaStackClient, job_uuid: str, request: dict[str, Any]) -> Any:
    client.alpha.post_training.preference_optimize(**request)
    status = wait_final(client, job_uuid, timeout_s=600)
    assert status.status == "completed", status.resources_allocated["error"]
    return status


def equivalence_request(job_uuid: str, model: Path, dataset_id: str, processes: int) -> dict[str, Any]:
    """3 steps of a global batch of 4 pairs (2 per rank with 2 processes), shuffled with the same seed."""
    return dpo_request(
        job_uuid,
        model,
        dataset_id,
        batch_size=4,
        max_steps_per_epoch=3,
        hyperparam_search_config=two_processes(num_processes=processes),
    )


@pytest.fixture(scope="module")
def one_process_losses(client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]) -> list:
    """The per-step losses of the equivalence job on one local process: what several processes must reproduce."""
    job_uuid = unique("ddp1")
    request = equivalence_request(job_uuid, tiny_model, register_rows(client, preference_rows), 1)
    losses = step_losses(Path(run_to_the_end(client, job_uuid, request).resources_allocated["job_dir"]))
    assert len(losses) == 3 and losses[-1] < losses[0]
    return losses


@pytest.mark.slow
def test_a_two_process_job_trains_the_same_losses_as_one_process_and_reports_them_once_to_its_trackers(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]], one_process_losses: list
) -> None:
    job_uuid = unique("ddp2")
    request = equivalence_request(job_uuid, tiny_model, register_rows(client, preference_rows), 2)
    request["logger_config"] = {"tensorboard": {}, "wandb": {}}

    status = run_to_the_end(client, job_uuid, request)

    resources = status.resources_allocated
    assert (resources["world_size"], resources["strategy"], resources["step"]) == (2, "ddp", 3)
    assert len(resources["peak_memory_gib_per_rank"]) == 2
    assert step_losses(Path(resources["job_dir"])) == pytest.approx(one_process_losses, abs=1e-4)
    job_dir = Path(resources["job_dir"])
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-3", "final"]
    assert AutoModelForCausalLM.from_pretrained(status.checkpoints[-1].path) is not None
    assert (job_dir / ACCELERATE_CONFIG_FILE).is_file()
    # rank 0 alone reports: one run each, holding the losses of the events
    assert len(list((job_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 1
    assert tensorboard_losses(job_dir) == step_losses(job_dir)
    assert len(list((job_dir / "wandb").glob("offline-run-*"))) == 1
    assert {name: tracker["error"] for name, tracker in resources["trackers"].items()} == {
        "tensorboard": None,
        "wandb": None,
    }
    # each rank trains with its share of the cores (one job at a time here, two ranks), and its log says so
    threads = threads_per_process(usable_cores(), 1, 2)
    assert resources["cpu_threads"] == threads
    log = Path(resources["log_path"]).read_text()
    for rank in (0, 1):
        assert f"rank {rank}: training on cpu with {threads} CPU thread" in log


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        # LoRA with its adapters disabled as the reference, packed batches, a merged model saved once
        {"use_lora": True, "lora_rank": 4, "padding_free": True, "merge_adapter": True},
        # LoRA over reference log-probs computed once before training, on each rank's share of the rows
        {"use_lora": True, "lora_rank": 4, "use_reference_model": False},
    ],
    ids=["lora-adapters_disabled-packed-merged", "lora-precomputed_log_probs"],
)
def test_lora_reference_strategies_and_packing_run_under_ddp(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]], overrides: dict[str, Any]
) -> None:
    job_uuid = unique("ddp-lora")
    request = dpo_request(
        job_uuid,
        tiny_model,
        register_rows(client, preference_rows),
        max_steps_per_epoch=2,
        hyperparam_search_config=two_processes(**overrides),
    )

    status = run_to_the_end(client, job_uuid, request)

    resources = status.resources_allocated
    assert resources["world_size"] == 2 and resources["padding_free"] is overrides.get("padding_free", False)
    final = Path(status.checkpoints[-1].path)
    assert final.name == ("final-merged" if overrides.get("merge_adapter") else "final")
    assert AutoModelForCausalLM.from_pretrained(final) is not None  # a merged model, or base + adapter via peft


@pytest.mark.slow
def test_cancelling_a_two_process_job_mid_step_leaves_no_rank(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    job_uuid = unique("ddp-cancel")
    launcher, ranks = running_ranks(client, tiny_model, preference_rows, job_uuid)

    client.alpha.post_training.job.cancel(job_uuid=job_uuid)

    status = wait_final(client, job_uuid, timeout_s=60)
    assert status.status == "cancelled"
    for pid in (launcher, *ranks.values()):
        poll(lambda pid=pid: process_gone(pid), timeout_s=15, what=f"process {pid} gone")


@pytest.mark.slow
def test_a_rank_killed_with_sigkill_fails_the_job_naming_the_rank_and_ends_the_other(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    job_uuid = unique("ddp-crash")
    launcher, ranks = running_ranks(client, tiny_model, preference_rows, job_uuid)

    os.kill(ranks[1], signal.SIGKILL)

    status = wait_final(client, job_uuid, timeout_s=30)  # torchrun ends rank 0; no collective waits for its timeout
    assert status.status == "failed"
    assert status.resources_allocated["error"].startswith(f"rank 1 (pid {ranks[1]}) was killed by signal SIGKILL")
    for pid in (launcher, ranks[0]):
        poll(lambda pid=pid: process_gone(pid), timeout_s=15, what=f"process {pid} gone")


@pytest.mark.slow
def test_a_two_process_job_dies_with_its_server_and_resumes_from_its_epoch_checkpoint_on_two_processes(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    job_uuid = unique("ddp-resume")
    steps_per_epoch = len(preference_rows) // 4
    with server_for(tmp_path) as server:
        client = client_for(server)
        launcher, ranks = running_ranks(client, tiny_model, preference_rows, job_uuid, n_epochs=3)
        job_dir = Path(client.alpha.post_training.job.status(job_uuid=job_uuid).resources_allocated["job_dir"])
        poll(lambda: last_trainer_checkpoint(job_dir), timeout_s=300, what="an epoch checkpoint")

        kill_server(server)
        for pid in (launcher, *ranks.values()):  # every rank dies with its launcher, the launcher with the server
            poll(lambda pid=pid: process_gone(pid), timeout_s=15, what=f"process {pid} gone with the server")

    with server_for(tmp_path) as restarted:
        status = wait_final(client_for(restarted), job_uuid, timeout_s=600)

    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert (resources["attempts"], resources["world_size"]) == (2, 2)
    assert resources["step"] == 3 * steps_per_epoch
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    [resumed] = [e for e in events if e["event"] == "resuming"]
    resumed_step = int(Path(resumed["checkpoint"]).name.split("-")[1])
    first_step = next(e["step"] for e in events[events.index(resumed) :] if e["event"] == "metrics")
    assert first_step == resumed_step + 1


def test_a_batch_that_does_not_split_over_the_processes_is_refused_naming_the_batch_size(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    request = dpo_request(
        unique("ddp-odd"),
        tiny_model,
        register_rows(client, preference_rows),
        batch_size=3,
        hyperparam_search_config=two_processes(),
    )
    with pytest.raises(BadRequestError, match=r"data_config\.batch_size.*multiple of 2"):
        client.alpha.post_training.preference_optimize(**request)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"num_processes": CORES + 1}, f"{CORES + 1} CPU processes on a server with {CORES} usable cores"),
        ({"num_processes": 2, "max_num_processes": 1}, r"2 processes; this server starts at most 1 for one job \(max_"),
        (  # Ray: the operator's cap holds at request time, the cluster's size at launch
            {"num_processes": 65536, "max_num_processes": 8, "executor": "ray", "ray_address": "h:1", "device": "cpu"},
            r"65536 processes; this server starts at most 8 for one job \(max_num_processes\)",
        ),
    ],
)
def test_more_processes_than_the_cores_or_the_operators_cap_are_refused_naming_num_processes(
    config: dict[str, Any], message: str
) -> None:
    batch = Given(config["num_processes"] * 2, "data_config.batch_size")  # splits evenly: only the count is wrong
    with pytest.raises(RequestError, match=rf"^hyperparam_search_config\.num_processes: {message}"):
        resolve_num_processes(TrlPostTrainingConfig(**config), "cpu", batch, "hyperparam_search_config")


def test_fsdp2_on_a_cpu_server_is_refused_at_request_time(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    request = dpo_request(
        unique("fsdp2-cpu"),
        tiny_model,
        register_rows(client, preference_rows),
        hyperparam_search_config=two_processes(distributed_strategy="fsdp2"),
    )
    with pytest.raises(BadRequestError, match=r"distributed_strategy.*CUDA GPUs only"):
        client.alpha.post_training.preference_optimize(**request)


FSDP2_DEFAULTS: dict[str, Any] = {
    "lora": None,
    "padding_free": "auto",
    "torch_compile": False,
    "master_weights": "model",
}


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("qlora", {"lora": LoraSpec(**LORA | {"quantize_4bit": True}, merge_adapter=False)}),
        ("merge_adapter", {"lora": LoraSpec(**LORA, merge_adapter=True)}),
        ("padding_free", {"padding_free": True}),
        ("torch_compile", {"torch_compile": True}),
        ("master_weights", {"master_weights": "optimizer"}),
    ],
)
def test_fsdp2_refuses_what_it_does_not_run_naming_the_field(name: str, setting: dict[str, Any]) -> None:
    settings = FSDP2_DEFAULTS | setting
    with pytest.raises(RequestError) as refused:
        check_strategy_combination("fsdp2", **settings, overrides="hyperparam_search_config")
    assert refused.value.field == f"hyperparam_search_config.{name}" and "fsdp2" in str(refused.value)
    check_strategy_combination("ddp", **settings, overrides="hyperparam_search_config")  # DDP runs them all
    check_strategy_combination("fsdp2", **FSDP2_DEFAULTS, overrides="hyperparam_search_config")


@pytest.mark.parametrize(("strategy", "trl_file"), [("ddp", "multi_gpu.yaml"), ("fsdp2", "fsdp2.yaml")])
def test_the_generated_launch_config_is_trls_own_and_accelerate_reads_it(
    tmp_path: Path, strategy: str, trl_file: str
) -> None:
    spec = write_job(tmp_path / "job", "model", [], num_processes=4, distributed_strategy=strategy)
    config = accelerate_config(spec)
    trl_config = yaml.safe_load((TRL_ACCELERATE_CONFIGS / trl_file).read_text())
    differences = {key for key in trl_config if trl_config[key] != config.get(key)}
    assert differences == {"num_processes", "mixed_precision"} and config["num_processes"] == 4
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config_from_file(str(path))
    assert (loaded.num_processes, loaded.distributed_type.value) == (4, "FSDP" if strategy == "fsdp2" else "MULTI_GPU")
    if strategy == "fsdp2":
        assert (loaded.fsdp_config["fsdp_version"], loaded.fsdp_config["fsdp_reshard_after_forward"]) == (2, True)


# -- executor: ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local Ray cluster: `ray start --head` on 127.0.0.1 with 2 CPUs; its address."""
    port = free_port()
    log = tmp_path_factory.mktemp("ray") / "ray.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", "2"]
    command += ["--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false"]
    head = subprocess.Popen(
        [*command, "--disable-usage-stats"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its daemons and workers stay in this session: the teardown ends them by pid
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    address = f"127.0.0.1:{port}"
    try:
        poll(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, 120, "ray start")
        assert head.poll() is None, log.read_text()[-3000:]
        yield address
    finally:
        for pid in session_members(head.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        head.wait()


@pytest.fixture(scope="module")
def ray_client(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Iterator[LlamaStackClient]:
    """`llama stack run` with executor: ray on that cluster (output_dir is local: every node is this machine)."""
    with server_for(tmp_path_factory.mktemp("ray-server"), executor="ray", ray_address=ray_cluster) as server:
        yield client_for(server)


def ray_worker_pids(job_dir: Path) -> set[int]:
    """Ray Train workers' pids, from the lines Ray forwards to the driver's output (the job's log)."""
    log = (job_dir / "train.log").read_text(errors="replace")
    return {int(pid) for pid in re.findall(r"\(RayTrainWorker pid=(\d+)", log)}


@pytest.mark.slow
def test_a_ray_job_on_two_workers_trains_the_same_losses_as_one_local_process(
    ray_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]], one_process_losses: list
) -> None:
    job_uuid = unique("ray2")
    request = equivalence_request(job_uuid, tiny_model, register_rows(ray_client, preference_rows), 2)

    status = run_to_the_end(ray_client, job_uuid, request)

    resources = status.resources_allocated
    assert (resources["executor"], resources["world_size"], resources["strategy"]) == ("ray", 2, "ddp")
    job_dir = Path(resources["job_dir"])
    assert len(ray_worker_pids(job_dir)) == 2 and resources["pid"] not in ray_worker_pids(job_dir)
    assert step_losses(job_dir) == pytest.approx(one_process_losses, abs=1e-4)
    assert AutoModelForCausalLM.from_pretrained(status.checkpoints[-1].path) is not None


@pytest.mark.slow
def test_an_sft_job_trains_on_two_ray_workers_and_saves_a_model_that_loads(
    ray_client: LlamaStackClient, tiny_model: Path
) -> None:
    job_uuid = unique("ray-sft")
    dataset_id = register_rows(ray_client, repeat_instructions(8, seed=3))
    ray_client.alpha.post_training.supervised_fine_tune(
        **sft_request(
            job_uuid,
            tiny_model,
            dataset_id,
            batch_size=4,
            max_steps_per_epoch=2,
            hyperparam_search_config=two_processes(),
        )
    )

    status = wait_final(ray_client, job_uuid, timeout_s=600)

    resources = status.resources_allocated
    assert status.status == "completed", resources["error"]
    assert (resources["algorithm"], resources["executor"], resources["world_size"]) == ("sft", "ray", 2)
    assert len(ray_worker_pids(Path(resources["job_dir"]))) == 2
    assert resources["step"] == 2
    assert AutoModelForCausalLM.from_pretrained(status.checkpoints[-1].path) is not None


@pytest.mark.slow
def test_cancelling_a_ray_job_stops_its_driver_and_every_worker(
    ray_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    status = start_long_job(ray_client, tiny_model, preference_rows, unique("ray-cancel"))
    driver, job_dir = status.resources_allocated["pid"], Path(status.resources_allocated["job_dir"])
    workers = poll(lambda: len(pids := ray_worker_pids(job_dir)) == 2 and pids, what="both Ray workers")

    ray_client.alpha.post_training.job.cancel(job_uuid=status.job_uuid)

    assert wait_final(ray_client, status.job_uuid, timeout_s=60).status == "cancelled"
    for pid in (driver, *workers):
        poll(lambda pid=pid: process_gone(pid), timeout_s=30, what=f"process {pid} gone")


@pytest.mark.slow
def test_a_ray_worker_lost_mid_job_fails_the_job_and_leaves_no_worker(
    ray_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    status = start_long_job(ray_client, tiny_model, preference_rows, unique("ray-lost"))
    driver, job_dir = status.resources_allocated["pid"], Path(status.resources_allocated["job_dir"])
    workers = poll(lambda: len(pids := ray_worker_pids(job_dir)) == 2 and pids, what="both Ray workers")

    os.kill(max(workers), signal.SIGKILL)

    status = wait_final(ray_client, status.job_uuid, timeout_s=60)
    assert status.status == "failed"
    # Ray names the lost worker when its health check fails before rank 0's collective does; else rank 0's
    # error says its peer went away
    assert re.match(r"Ray worker rank [01] failed: |RuntimeError: .*gloo", status.resources_allocated["error"])
    for pid in (driver, *workers):
        poll(lambda pid=pid: process_gone(pid), timeout_s=30, what=f"process {pid} gone")


def test_fsdp2_asked_for_by_name_launches_through_accelerate_even_with_one_process(tmp_path: Path) -> None:
    plain = write_job(tmp_path / "plain", "model", [], num_processes=1, distributed_strategy="ddp")
    assert launch_command(plain, "the_recipe", ["--resume"])[1:] == ["-m", "the_recipe", str(plain.path), "--resume"]

    sharded = write_job(tmp_path / "sharded", "model", [], num_processes=1, distributed_strategy="fsdp2")
    command = launch_command(sharded, "the_recipe", ["--resume"])

    assert command[1:3] == ["-m", LAUNCHER_MODULE] and command[-3:] == ["the_recipe", str(sharded.path), "--resume"]
    loaded = load_config_from_file(command[3])
    assert (loaded.distributed_type.value, loaded.num_processes, sharded.parallel_strategy) == ("FSDP", 1, "fsdp2")


@pytest.mark.slow
def test_a_paused_two_process_job_stops_both_ranks_at_one_step_and_resumes_to_the_end(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    spec = write_job(
        tmp_path / "paused", tiny_model, preference_rows, num_processes=2, max_steps_per_epoch=3, save_every_epoch=False
    )
    (spec.path / PAUSE_REQUEST_FILE).touch()  # the server's request, there before the first step ends
    jobs = JobManager(max_concurrent_jobs=1, cancel_grace_period_s=5.0, poll_interval_s=0.05)
    jobs.start()
    try:
        jobs.submit(spec)
        paused = poll(lambda: (r := jobs.get(spec.job_uuid)).status == "paused" and r, 300, "paused")
        assert paused.exit_code == 0 and last_trainer_checkpoint(spec.path).name == "checkpoint-1"
        jobs.resume(spec.job_uuid)
        done = poll(lambda: (r := jobs.get(spec.job_uuid)).status not in ("scheduled", "in_progress") and r, 300)
        assert done.status == "completed", done.error
        assert (done.step, done.attempts) == (3, 2)
    finally:
        jobs.shutdown()


@pytest.mark.slow
def test_a_ray_job_asking_for_more_workers_than_the_cluster_has_fails_saying_so_instead_of_waiting(
    ray_client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    job_uuid = unique("ray-too-many")
    request = equivalence_request(job_uuid, tiny_model, register_rows(ray_client, preference_rows), 4)

    ray_client.alpha.post_training.preference_optimize(**request)
    status = wait_final(ray_client, job_uuid, timeout_s=300)

    assert status.status == "failed"
    assert status.resources_allocated["error"].startswith("num_processes 4: the Ray cluster at 127.0.0.1:"), (
        status.resources_allocated["error"]
    )
    assert "has 2 CPUs, one for each worker; ask for at most 2 processes" in status.resources_allocated["error"]
