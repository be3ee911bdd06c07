"""The provider against raw TRL on the same DPO work, alternating A B A B in one run.

    python bench/dpo_bench.py SHAPE [--varlen] [--steps N] [--bs B] [--seq L] [--reps R] [--arms a,b,c]
                              [--variant NAME=KEY=VALUE[,KEY=VALUE...]]

Workload (bench/workload.py): a random-init model of a Qwen2.5 shape (tiny, qwen0.5b, qwen1.5b), a word-level
tokenizer, and prompt/chosen/rejected rows, equal length or chat-like (--varlen). Arms:

  provider       a real `llama stack run` server and llama-stack-client, provider defaults
  raw_trl        bench/raw_trl_dpo.py: DPOTrainer called directly with the settings the provider job resolved
  trl_defaults   bench/trl_defaults_dpo.py: DPOTrainer with TRL's own defaults, what TRL gives out of the box
  anchor         optional cross-check, only where ../shared/bench/trl_dpo_anchor.py (or --anchor) exists: the
                 shared anchor script in its trl_defaults mode, on the same rows (same generator and seed)
  NAME           a --variant: a provider job whose request overrides provider config fields
                 (hyperparam_search_config), e.g. --variant packed=padding_free=true --arms provider,packed,raw_trl

Reports per arm the median over reps of real (non-padding) tokens/s, MFU (GPU), padding share, time
from request (process start for raw_trl) to the first optimizer step, the part of it after the training
process's imports (job handed over or imports done, to the first step: model, data, first step), and peak
memory; then, for each variant, `NAME/provider tokens_per_s ratio: X`, and last
`provider/raw_trl tokens_per_s ratio: X`.
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

import torch
import transformers
import trl
import yaml
from llama_stack_client import LlamaStackClient
from transformers import AutoTokenizer
from workload import preference_rows, save_model, tokenizer  # bench/ is on the path of a script run from it

from llama_stack_provider_trl.demo.requests import dpo_request
from llama_stack_provider_trl.demo.stack_server import StackServer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ANCHOR = REPO_ROOT.parent / "shared" / "bench" / "trl_dpo_anchor.py"
BUILT_IN_ARMS = ("provider", "raw_trl", "trl_defaults", "anchor")
METRICS = ("tokens_per_s", "mfu", "padding_share", "first_step_s", "after_imports_s", "peak_memory_gib", "final_loss")


def prepare_workload(a: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The model and tokenizer, saved once, and the rows as JSON lines: (model_dir, rows_path)."""
    model_dir = work / "model"
    save_model(a.shape, model_dir)
    sample = "w1 w22 w333"
    if AutoTokenizer.from_pretrained(model_dir)(sample)["input_ids"] != tokenizer()(sample)["input_ids"]:
        sys.exit(f"the tokenizer saved in {model_dir} does not load back as built; token counts would differ")
    rows_path = work / "rows.jsonl"
    rows = preference_rows(a.steps * a.bs, a.seq, a.varlen)
    rows_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return model_dir, rows_path


def write_run_config(work: Path, max_seq_length: int, overrides: list[str]) -> Path:
    config = yaml.safe_load((REPO_ROOT / "run.yaml").read_text())
    [provider] = config["providers"]["post_training"]
    provider["config"]["max_seq_length"] = max_seq_length  # the anchor's max_length
    for override in overrides:  # KEY=VALUE, VALUE read as YAML: 64, false, null
        key, _, value = override.partition("=")
        provider["config"][key] = yaml.safe_load(value)
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def parse_variants(specs: list[str]) -> dict[str, dict[str, Any]]:
    """NAME=KEY=VALUE[,KEY=VALUE...] -> {NAME: {KEY: VALUE}}, each VALUE read as YAML (true, 64, null)."""
    variants: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, _, settings = spec.partition("=")
        pairs = [setting.partition("=") for setting in settings.split(",")]
        if not name or name in BUILT_IN_ARMS or any(not k or not eq for k, eq, _ in pairs):
            sys.exit(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] with a new NAME")
        variants[name] = {key: yaml.safe_load(value) for key, _, value in pairs}
    return variants


def run_provider(
    client: LlamaStackClient,
    jobs_root: Path,
    model_dir: Path,
    dataset_id: str,
    a: argparse.Namespace,
    overrides: dict[str, Any] | None = None,
):
    job_uuid = f"bench-{time.time_ns()}"
    requested = time.time()
    request = dpo_request(
        job_uuid,
        model_dir,
        dataset_id,
        max_steps_per_epoch=a.steps,
        batch_size=a.bs,
        lr=1e-6,
        hyperparam_search_config=overrides,
    )
    client.alpha.post_training.preference_optimize(**request)
    while (status := client.alpha.post_training.job.status(job_uuid=job_uuid)).status not in (
        "completed",
        "failed",
        "cancelled",
    ):
        time.sleep(0.5)
    if status.status != "completed":
        raise RuntimeError(f"provider job {status.status}: {status.resources_allocated['error']}")
    events = [json.loads(line) for line in (jobs_root / job_uuid / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "metrics"]
    [peak] = [e["gib"] for e in events if e["event"] == "peak_memory"]
    [started] = [e["time"] for e in events if e["event"] == "started"]  # the recipe's imports are done
    result = {
        "tokens_per_s": steps[-1]["tokens_per_s"],
        "mfu": steps[-1]["mfu"],
        "padding_share": steps[-1]["padding_share"],
        "first_step_s": steps[0]["time"] - requested,
        "after_imports_s": steps[0]["time"] - started,
        "peak_memory_gib": peak,
        "final_loss": steps[-1]["metrics"].get("loss"),
        "job_dir": str(jobs_root / job_uuid),
    }
    return result, jobs_root / job_uuid


def run_raw_trl(job_dir: Path) -> dict[str, Any]:
    started = time.time()
    out = _run_result([sys.executable, str(REPO_ROOT / "bench" / "raw_trl_dpo.py"), str(job_dir)])
    out["first_step_s"] = out.pop("first_step_at") - started
    return out


def run_trl_defaults(model_dir: Path, rows_path: Path, max_length: int, a: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    command = [sys.executable, str(REPO_ROOT / "bench" / "trl_defaults_dpo.py"), str(model_dir), str(rows_path)]
    command += [
        "--bs",
        str(a.bs),
        "--steps",
        str(a.steps),
        "--max-length",
        str(max_length),
        "--workdir",
        str(a.workdir),
    ]
    out = _run_result(command)
    out["first_step_s"] = out.pop("first_step_at") - started
    return out


def run_anchor(anchor_path: Path, a: argparse.Namespace) -> dict[str, Any]:
    """The shared anchor's trl_defaults mode, as a cross-check of the trl_defaults arm."""
    command = [sys.executable, str(anchor_path), a.shape, "trl_defaults", "--steps", str(a.steps), "--bs", str(a.bs)]
    command += ["--seq", str(a.seq)] + (["--varlen"] if a.varlen else [])
    out = _run_result(command)
    mfu = out.get("mfu_pct_989")
    return {
        "tokens_per_s": out["tokens_per_s"],
        "mfu": mfu / 100 if mfu is not None and torch.cuda.is_available() else None,
        "padding_share": out["pad_share"],
        "first_step_s": None,
        "after_imports_s": None,
        "peak_memory_gib": out["peak_gib"],
        "final_loss": out["final_loss"],
    }


def _run_result(command: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{command[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per status poll otherwise
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=["tiny", "qwen0.5b", "qwen1.5b"])
    ap.add_argument("--varlen", action="store_true", help="chat-like lognormal lengths (median ~seq/2, cap 2*seq)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--arms", help="default: provider,raw_trl,trl_defaults, and anchor where the anchor exists")
    ap.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR, help="the shared anchor script (optional)")
    ap.add_argument("--workdir", type=Path, default=REPO_ROOT / ".bench")
    ap.add_argument("--json-out", type=Path, help="also write the results here")
    ap.add_argument(
        "--provider-config", action="append", default=[], metavar="KEY=VALUE", help="override a provider config field"
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="an arm NAME: a provider job with these per-job overrides",
    )
    a = ap.parse_args()
    arms = (a.arms or "provider,raw_trl,trl_defaults" + (",anchor" if a.anchor.is_file() else "")).split(",")
    variants = parse_variants(a.variant)
    unknown = [arm for arm in arms if arm not in BUILT_IN_ARMS and arm not in variants]
    if unknown:
        sys.exit(f"unknown arms {unknown}: use {', '.join(BUILT_IN_ARMS)} or a --variant NAME")
    if "anchor" in arms and not a.anchor.is_file():
        sys.exit(f"the anchor arm needs the shared anchor script, not found at {a.anchor}; pass --anchor PATH")
    if "raw_trl" in arms and "provider" not in arms:
        sys.exit("raw_trl replays a provider job's settings: include the provider arm")
    if "raw_trl" in arms and arms.index("raw_trl") < arms.index("provider"):
        sys.exit("raw_trl replays the provider arm's job of the same rep: list provider before raw_trl")

    work = a.workdir / f"{a.shape}-{'varlen' if a.varlen else 'fixed'}-{a.seq}"
    work.mkdir(parents=True, exist_ok=True)
    model_dir, rows_path = prepare_workload(a, work)
    max_length = (4 if a.varlen else 3) * a.seq + 8  # every arm's, as the anchor's
    run_config = write_run_config(work, max_length, a.provider_config)
    jobs_root = work / "jobs"
    env = {"SQLITE_STORE_DIR": str(work / "store"), "TRL_OUTPUT_DIR": str(jobs_root), "HF_HUB_OFFLINE": "1"}

    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    with StackServer(run_config, work / "server.log", env=env) as server:
        client = LlamaStackClient(base_url=server.base_url, timeout=120)
        dataset_id = f"bench-{time.time_ns()}"
        client.beta.datasets.register(
            purpose="post-training/messages",
            source={"type": "rows", "rows": [json.loads(line) for line in rows_path.read_text().splitlines()]},
            dataset_id=dataset_id,
        )
        job_dir = None
        for rep in range(a.reps):  # A B A B: drift in the machine's speed hits every arm alike
            for arm in arms:
                if arm == "provider":
                    result, job_dir = run_provider(client, jobs_root, model_dir, dataset_id, a)
                elif arm in variants:
                    try:  # a variant is a trial: when its job fails, say why and keep measuring the others
                        result, _ = run_provider(client, jobs_root, model_dir, dataset_id, a, variants[arm])
                    except RuntimeError as exc:
                        print(f"rep {rep} {arm:<12} {exc}", flush=True)
                        continue
                elif arm == "raw_trl":
                    result = run_raw_trl(job_dir)
                elif arm == "trl_defaults":
                    result = run_trl_defaults(model_dir, rows_path, max_length, a)
                else:
                    result = run_anchor(a.anchor, a)
                results[arm].append(result)
                print(f"rep {rep} {arm:<12} " + json.dumps({k: _round(v) for k, v in result.items()}), flush=True)

    summary = {arm: {m: median([r[m] for r in runs]) for m in METRICS} for arm, runs in results.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"\n{a.shape} {'varlen' if a.varlen else 'fixed'} seq {a.seq} bs {a.bs} steps {a.steps} reps {a.reps}")
    if a.provider_config:
        print("provider config overrides: " + " ".join(a.provider_config))
    for name, overrides in variants.items():
        print(f"variant {name}: " + json.dumps(overrides))
    print(f"device {device}; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    columns = [("tokens/s", "tokens_per_s", ".0f"), ("MFU", "mfu", ".1%"), ("padding", "padding_share", ".0%")]
    columns += [("1st step s", "first_step_s", ".1f"), ("w/o import", "after_imports_s", ".1f")]
    columns += [("peak GiB", "peak_memory_gib", ".2f")]
    columns += [("loss", "final_loss", ".4f")]
    print(f"{'arm':<14}" + "".join(f"{title:>11}" for title, _, _ in columns))
    for arm, medians in summary.items():
        print(f"{arm:<14}" + "".join(f"{_fmt(medians[key], spec):>11}" for _, key, spec in columns))
    if a.json_out:
        a.json_out.write_text(
            json.dumps(
                {
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "device": device,
                    "machine": platform.platform(),
                    "versions": {
                        "torch": torch.__version__,
                        "transformers": transformers.__version__,
                        "trl": trl.__version__,
                    },
                    "workload": vars(a)
                    | {"anchor": str(a.anchor), "workdir": str(a.workdir), "json_out": str(a.json_out)},
                    "runs": results,
                    "median": summary,
                },
                indent=2,
            )
        )
    baseline = summary.get("provider", {}).get("tokens_per_s")
    for name in (arm for arm in arms if arm in variants):
        if baseline and summary[name]["tokens_per_s"]:
            print(f"{name}/provider tokens_per_s ratio: {summary[name]['tokens_per_s'] / baseline:.3f}")
    if baseline and summary.get("raw_trl", {}).get("tokens_per_s"):
        print(f"provider/raw_trl tokens_per_s ratio: {baseline / summary['raw_trl']['tokens_per_s']:.3f}")


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
