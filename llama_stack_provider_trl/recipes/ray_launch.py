"""A job on a Ray cluster (``executor: ray``), as the server starts it:

    python -m llama_stack_provider_trl.recipes.ray_launch <ray_address> <recipe_module> <job_dir> [--resume]

This process is the job's Ray driver: it connects to the cluster and runs a Ray Train ``TorchTrainer`` whose
workers, placed by the cluster, each run the same recipe file on the same job directory (Ray Train sets up the
torch process group and RANK/WORLD_SIZE, which TRL's Accelerator joins). The job directory lives under the
provider's ``output_dir``, which must be a path every node reaches (a shared filesystem): rank 0 writes the events
and Trainer the checkpoints there, and the server reads them as for a local job. The driver dies with the server;
when the driver goes, Ray ends the job's workers (they belong to it), so cancel is the same signal as locally.
"""

import importlib
import sys
from pathlib import Path
from typing import Any

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import TrainingFailedError, WorkerGroupError

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE, JobSpecBase
from llama_stack_provider_trl.common.parent_watch import die_with_parent
from llama_stack_provider_trl.recipes.ranks import (
    PROCESS_GROUP_TIMEOUT_S,
    events_size,
    launcher_arguments,
    report_rank_failure,
)

RAY_RESULTS_DIR = "ray"  # Ray Train's own run state, beside the checkpoints


class RecipeFailed(RuntimeError):
    """The recipe returned non-zero on a worker: it failed in Python, and rank 0 wrote why to the events."""


def _run_recipe(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: the recipe's own entry point, as ``python -m <recipe>`` would run it."""
    recipe = importlib.import_module(config["recipe"])
    if recipe.main([config["recipe"], config["job_dir"], *config["args"]]) != 0:
        raise RecipeFailed(f"the recipe failed on rank {ray.train.get_context().get_world_rank()}; see the job's log")


def _cause(error: TrainingFailedError) -> tuple[int | None, str]:
    """(rank, what happened) of the worker that failed the job; rank None when Ray itself failed. A worker that
    died (its actor lost) went first: the others then fail in their collectives, the peer gone."""
    failures = error.worker_failures if isinstance(error, WorkerGroupError) else {}
    if not failures:
        return None, f"the Ray job failed: {str(error).strip().splitlines()[-1]}"
    # Ray wraps what the training function raised; a worker that died has no such exception, only Ray's own
    died = [rank for rank, failure in failures.items() if not isinstance(failure, UserExceptionWithTraceback)]
    rank = min(died or failures)
    lines = str(failures[rank]).strip().splitlines() or [type(failures[rank]).__name__]
    return rank, f"Ray worker rank {rank} failed: {lines[0] if died else lines[-1]}"


def _too_few_workers(address: str, workers: int, resource: str) -> str | None:
    """Why the cluster cannot place ``workers`` workers of one ``resource`` each, or None when it can."""
    total = int(ray.cluster_resources().get(resource, 0))
    if workers <= total:
        return None
    return (
        f"num_processes {workers}: the Ray cluster at {address} has {total} {resource}s, one for each worker; ask for "
        f"at most {total} processes, or add nodes to the cluster"
    )


def main(argv: list[str]) -> int:
    die_with_parent()
    arguments = launcher_arguments(argv, "RAY_ADDRESS")
    if arguments is None:
        return 2
    address, recipe_module, job_dir, recipe_args = arguments
    spec = JobSpecBase.read(job_dir)  # the shared part: any algorithm's job
    on_gpu = spec.device.startswith("cuda")
    events_path = Path(job_dir) / EVENTS_FILE
    events_before = events_size(events_path)
    ray.init(address=address, log_to_driver=True)  # the workers' output lands in the job's log
    too_few = _too_few_workers(address, spec.num_processes, "GPU" if on_gpu else "CPU")
    if too_few is not None:  # Ray would wait for the resources forever
        report_rank_failure(events_path, events_before, None, too_few)
        ray.shutdown()
        return 1
    trainer = TorchTrainer(
        _run_recipe,
        train_loop_config={"recipe": recipe_module, "job_dir": job_dir, "args": recipe_args},
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo", timeout_s=PROCESS_GROUP_TIMEOUT_S),
        scaling_config=ScalingConfig(num_workers=spec.num_processes, use_gpu=on_gpu),
        run_config=RunConfig(
            name=spec.job_uuid,
            storage_path=str(Path(job_dir) / RAY_RESULTS_DIR),
            failure_config=FailureConfig(max_failures=0),  # the server decides about resuming, as for local jobs
        ),
    )
    try:
        trainer.fit()
    except TrainingFailedError as exc:
        report_rank_failure(events_path, events_before, *_cause(exc))
        return 1
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
