"""How many CPU threads each training process of a job runs, decided once in the server for every launch.

torch runs one intra-op thread per core by default. Each job is a process of its own (each rank of a job too), so
``max_concurrent_jobs`` jobs of ``num_processes`` ranks would run that many times more threads than there are
cores, which then wait for each other at every parallel region (bench/RESULTS.md measured steps many times slower).
So every CPU job's process gets its share: the cores this server may use divided by the jobs that may run at once
and the job's ranks, at least 1. It reaches the process as ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` in its
environment, which the OpenMP and MKL runtimes read when torch loads them: that holds for a process started ahead
(warm_standby, torch already imported), for every rank torchrun starts (which would otherwise give each rank one
thread), and for what those processes start. What the server's operator set in its environment wins: it is
passed on unchanged.

A job of several ranks on GPUs gets the same share (torchrun would otherwise give each rank one thread); a
single-process GPU or MPS job keeps torch's default (its CPU threads barely matter); Ray workers get what the Ray
cluster gives them (the number of CPUs each worker holds), since they run on the cluster's nodes, not this one.
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path

from llama_stack_provider_trl.common.recipe_process import THREAD_VARIABLES

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")  # "0::<path>": this process's cgroup (v2) under _CGROUP_ROOT


def usable_cores() -> int:
    """Cores this server may run on: its CPU affinity (taskset, cpusets, docker --cpuset-cpus), capped by a cgroup
    v2 CPU quota (docker --cpus, a Kubernetes CPU limit) rounded up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(min(cores, quota) if quota is not None else cores, 1)


def _cgroup_cpu_quota() -> int | None:
    """The tightest cpu.max quota (in whole CPUs, rounded up) of this process's cgroup and its parents; None when
    there is none (cgroup v1, no limit, not Linux)."""
    try:
        line = next(x for x in _PROC_CGROUP.read_text().splitlines() if x.startswith("0::"))
    except (OSError, StopIteration):
        return None
    group = _CGROUP_ROOT / line[3:].strip().lstrip("/")
    quotas = []
    for directory in (group, *group.parents):
        if not directory.is_relative_to(_CGROUP_ROOT):
            break
        try:
            limit, period = (directory / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if limit != "max":
            quotas.append(math.ceil(int(limit) / int(period)))
    return min(quotas, default=None)


def threads_per_process(cores: int, max_concurrent_jobs: int, processes: int) -> int:
    """The share of ``cores`` of one process of a job: the cores divided among the jobs that may run at once and
    the job's ranks, at least 1."""
    return max(cores // (max_concurrent_jobs * processes), 1)


def thread_environment(
    device: str,
    processes: int,
    max_concurrent_jobs: int,
    on_ray: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The thread variables to add to the environment of a job's processes: {} where torch's default stays, or
    where the server's operator set either one (torch takes MKL_NUM_THREADS over OMP_NUM_THREADS, so setting the
    other would override the operator's)."""
    if on_ray or (device != "cpu" and processes == 1) or any(name in environ for name in THREAD_VARIABLES):
        return {}
    threads = str(threads_per_process(usable_cores(), max_concurrent_jobs, processes))
    return dict.fromkeys(THREAD_VARIABLES, threads)
