"""The CPU threads the server gives each training process (engine/cpu_threads.py), in-process.

Real jobs reporting the count they trained with: test_job_faults.py (several jobs at once), test_distributed.py
(two ranks), test_warm_standby.py (the operator's OMP_NUM_THREADS); the JobManager's hand-over: test_job_manager.py.
"""

import os
from pathlib import Path

import pytest

from llama_stack_provider_trl.engine import cpu_threads
from llama_stack_provider_trl.engine.cpu_threads import thread_environment, threads_per_process, usable_cores


@pytest.mark.parametrize(
    ("cores", "jobs", "ranks", "threads"),
    [(2, 1, 1, 2), (2, 2, 1, 1), (2, 1, 2, 1), (16, 2, 2, 4), (7, 2, 1, 3), (2, 4, 1, 1), (2, 2, 2, 1)],
)
def test_the_cores_are_shared_among_the_jobs_that_may_run_at_once_and_their_ranks_at_least_one_each(
    cores: int, jobs: int, ranks: int, threads: int
) -> None:
    assert threads_per_process(cores, jobs, ranks) == threads


@pytest.fixture
def sixteen_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 16)


def test_a_cpu_job_gets_its_share_in_the_openmp_and_mkl_variables(sixteen_cores: None) -> None:
    assert thread_environment("cpu", 1, 4, environ={}) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert thread_environment("cpu", 2, 4, environ={}) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


@pytest.mark.parametrize("operator", [{"OMP_NUM_THREADS": "3"}, {"MKL_NUM_THREADS": "3"}])
def test_thread_variables_the_operator_set_for_the_server_are_left_as_they_are(
    sixteen_cores: None, operator: dict[str, str]
) -> None:
    """torch takes MKL_NUM_THREADS over OMP_NUM_THREADS: either one set by the operator stops the server's."""
    assert thread_environment("cpu", 1, 4, environ=operator) == {}


def test_a_one_process_gpu_job_keeps_torchs_default_and_gpu_ranks_get_their_share(sixteen_cores: None) -> None:
    for device in ("cuda", "cuda:1", "mps"):
        assert thread_environment(device, 1, 2, environ={}) == {}
    assert thread_environment("cuda", 4, 1, environ={}) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}


def test_ray_workers_keep_the_threads_their_cluster_gives_them(sixteen_cores: None) -> None:
    assert thread_environment("cpu", 2, 1, on_ray=True, environ={}) == {}


def test_the_usable_cores_are_the_servers_cpu_affinity() -> None:
    assert usable_cores() == min(len(os.sched_getaffinity(0)), cpu_threads._cgroup_cpu_quota() or 1_000_000)


def test_a_cgroup_cpu_quota_caps_the_usable_cores_at_the_tightest_limit_rounded_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cgroup"
    (root / "pod" / "job").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "pod" / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs: 3 threads may run
    (root / "pod" / "job" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/pod/job\n")
    monkeypatch.setattr(cpu_threads, "_CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_threads, "_PROC_CGROUP", proc)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))

    assert usable_cores() == 3
    (root / "pod" / "cpu.max").write_text("max 100000\n")
    assert usable_cores() == 64
