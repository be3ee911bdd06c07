"""Two DPO jobs at once on the CPU: each process's share of the cores (the server's default) against torch's default
threads in every process, alternating A B A B, one real `llama stack run` server per run.

    python bench/cpu_threads.py [--shape tiny] [--steps N] [--bs B] [--seq L] [--reps R] [--jobs J]

Each run starts a server with ``max_concurrent_jobs: J`` (2) and submits J identical jobs together. Arm ``share``:
the server gives each job cores / J threads (engine/cpu_threads.py). Arm ``torch_default``: the server's operator
sets OMP_NUM_THREADS to what torch runs by default here (torch.get_num_threads() in a fresh process), which the
server leaves as it is, so every job runs torch's default. Reported per job: optimizer steps/s from its 3rd logged
step to its last (loading and the first steps left out) and the CPU threads its status says it trained with; per
arm the median over reps of the jobs' summed steps/s, and last `share/torch_default steps/s ratio: X`.
"""

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from llama_stack_client import LlamaStackClient
from workload import preference_rows, save_model  # bench/ is on the path of a script run from it

from llama_stack_provider_trl.demo.requests import dpo_request
from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.engine.cpu_threads import usable_cores

REPO_ROOT = Path(__file__).resolve().parents[1]
ARMS = ("share", "torch_default")
FINAL = ("completed", "failed", "cancelled")


def torch_default_threads() -> int:
    """What torch runs in a process whose environment sets no thread variable."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)


def steps_per_s(job_dir: Path) -> float:
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "metrics"][2:]
    return (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["time"] - steps[0]["time"])


def run(arm: str, a: argparse.Namespace, work: Path, model_dir: Path, rows: list[dict[str, str]]) -> dict[str, Any]:
    """One server, J jobs submitted together: each job's steps/s and threads."""
    home = work / f"{arm}-{time.time_ns()}"
    home.mkdir(parents=True)
    config = yaml.safe_load((REPO_ROOT / "run.yaml").read_text())
    [provider] = config["providers"]["post_training"]
    provider["config"].update(max_concurrent_jobs=a.jobs, max_seq_length=3 * a.seq + 8, warm_standby=False)
    (home / "run.yaml").write_text(yaml.safe_dump(config))
    env = {"HOME": str(home), "SQLITE_STORE_DIR": str(home), "TRL_OUTPUT_DIR": str(home / "jobs")}
    env |= {"TRL_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    if arm == "torch_default":
        env["OMP_NUM_THREADS"] = str(a.torch_threads)
    with StackServer(home / "run.yaml", home / "server.log", env=env) as server:
        client = LlamaStackClient(base_url=server.base_url, timeout=120)
        dataset_id = f"bench-{time.time_ns()}"
        client.beta.datasets.register(
            purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
        )
        names = [f"{arm}-{i}-{time.time_ns()}" for i in range(a.jobs)]
        for name in names:
            request = dpo_request(name, model_dir, dataset_id, max_steps_per_epoch=a.steps, batch_size=a.bs, lr=1e-6)
            client.alpha.post_training.preference_optimize(**request)
        statuses = []
        for name in names:
            while (status := client.alpha.post_training.job.status(job_uuid=name)).status not in FINAL:
                time.sleep(0.5)
            if status.status != "completed":
                raise RuntimeError(f"job {name} {status.status}: {status.resources_allocated['error']}")
            statuses.append(status.resources_allocated)
    jobs = [{"steps_per_s": steps_per_s(Path(s["job_dir"])), "cpu_threads": s["cpu_threads"]} for s in statuses]
    return {"jobs": jobs, "steps_per_s": sum(job["steps_per_s"] for job in jobs)}


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["tiny", "qwen0.5b"], default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="jobs at once (max_concurrent_jobs)")
    ap.add_argument("--workdir", type=Path, default=REPO_ROOT / ".bench")
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    if a.steps < 4:
        sys.exit("--steps: give at least 4 (steps/s is measured from the 3rd logged step)")
    a.torch_threads = torch_default_threads()
    work = a.workdir / f"cpu-threads-{a.shape}-{a.seq}"
    model_dir = work / "model"
    save_model(a.shape, model_dir)
    rows = preference_rows(a.steps * a.bs, a.seq, varlen=False)

    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for rep in range(a.reps):  # A B A B: drift in the machine's load hits both arms alike
        for arm in ARMS:
            results[arm].append(run(arm, a, work, model_dir, rows))
            print(f"rep {rep} {arm:<14} {json.dumps(results[arm][-1])}", flush=True)

    medians = {arm: statistics.median(r["steps_per_s"] for r in runs) for arm, runs in results.items()}
    machine = f"{platform.platform()}, {usable_cores()} usable cores, load average {os.getloadavg()[0]:.1f}"
    print(f"\n{a.jobs} jobs at once, {a.shape} seq {a.seq} bs {a.bs} steps {a.steps} reps {a.reps}; {machine}")
    print(f"torch's default: {a.torch_threads} threads a process")
    for arm, runs in results.items():
        threads = sorted({job["cpu_threads"] for r in runs for job in r["jobs"]})
        print(f"{arm:<14} threads {threads}  summed steps/s median {medians[arm]:.2f}")
    if a.json_out:
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        a.json_out.write_text(json.dumps({"date": when, "machine": machine, "runs": results, "median": medians}))
    print(f"share/torch_default steps/s ratio: {medians['share'] / medians['torch_default']:.3f}")


if __name__ == "__main__":
    main()
