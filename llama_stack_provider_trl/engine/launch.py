"""The command line that starts a job's training processes.

One process: ``python -m <recipe> <job_dir> [--resume]``. On a Ray cluster (executor: ray): the job's Ray
driver, recipes/ray_launch.py, which runs the recipe on Ray Train's workers. Several local processes:
``accelerate launch`` (run through recipes/accelerate_launch.py, which adds parent-death handling and names a
failed rank) with a config generated into the job directory in the shape of TRL's own ``accelerate_configs``
(multi_gpu.yaml for DDP, fsdp2.yaml for FSDP2), so what runs is what TRL documents for
``accelerate launch --config_file``. The recipe file is the same in every case; each rank reads the same job.json.
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llama_stack_provider_trl.common.job_spec import JobSpecBase

LAUNCHER_MODULE = "llama_stack_provider_trl.recipes.accelerate_launch"
RAY_LAUNCHER_MODULE = "llama_stack_provider_trl.recipes.ray_launch"
ACCELERATE_CONFIG_FILE = "accelerate_config.yaml"


def accelerate_config(spec: JobSpecBase) -> dict[str, Any]:
    """TRL's multi_gpu.yaml or fsdp2.yaml with this job's process count. On a CPU the DDP shape runs as well:
    torchrun starts the processes and each one joins a gloo group (the recipe trains with use_cpu)."""
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "MULTI_GPU",
        "downcast_bf16": "no",
        "gpu_ids": "all",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": "no",  # the recipe's TrainingArguments set the job's precision
        "num_machines": 1,
        "num_processes": spec.num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
        "use_cpu": False,  # true would make accelerate run one process (or mpirun); torchrun starts them all
    }
    if spec.distributed_strategy == "fsdp2":
        config["distributed_type"] = "FSDP"
        config["enable_cpu_affinity"] = False
        config["fsdp_config"] = {
            "fsdp_activation_checkpointing": False,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,  # FULL_SHARD
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # checkpoints load with from_pretrained
            "fsdp_version": 2,
        }
        del config["gpu_ids"]
    return config


def launch_command(spec: JobSpecBase, recipe_module: str, recipe_args: Sequence[str]) -> list[str]:
    """The job's command line; with several processes it also writes their accelerate config to the job dir."""
    if spec.ray_address is not None:
        driver = [sys.executable, "-m", RAY_LAUNCHER_MODULE, spec.ray_address]
        return [*driver, recipe_module, str(spec.path), *recipe_args]
    if spec.parallel_strategy is None:
        return [sys.executable, "-m", recipe_module, str(spec.path), *recipe_args]
    config_path = Path(spec.path) / ACCELERATE_CONFIG_FILE
    config_path.write_text(yaml.safe_dump(accelerate_config(spec), sort_keys=False))
    return [sys.executable, "-m", LAUNCHER_MODULE, str(config_path), recipe_module, str(spec.path), *recipe_args]
