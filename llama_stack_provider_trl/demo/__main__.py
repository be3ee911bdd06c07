"""Offline end-to-end demo: `llama stack run run.yaml` + llama-stack-client + a DPO job on a local model.

    python -m llama_stack_provider_trl.demo        (what `make demo` runs)

Builds a tiny model locally (no Hub access), starts the stack from run.yaml, registers a synthetic
preference dataset, runs DPO through the client while printing progress, then compares the base and
trained models on held-out pairs.
"""

import logging
import os
import statistics
import sys
import time
from pathlib import Path

from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.preference_eval import preference_margins
from llama_stack_provider_trl.demo.requests import dpo_request
from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.tiny_model import build_tiny_model
from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("TRL_DEMO_DIR", REPO_ROOT / ".demo"))


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per status poll otherwise
    train_rows, heldout_rows = arithmetic_preferences(96), arithmetic_preferences(32, offset=1000)
    model_dir = STATE_DIR / "tiny-model"
    if not (model_dir / "config.json").is_file():
        print(f"building a tiny local model in {model_dir}")
        build_tiny_model(model_dir, corpus(train_rows + heldout_rows))

    env = {
        "SQLITE_STORE_DIR": str(STATE_DIR / "store"),
        "TRL_OUTPUT_DIR": str(STATE_DIR / "jobs"),
        "HF_HUB_OFFLINE": "1",
    }
    print("starting `llama stack run run.yaml` ...")
    with StackServer(REPO_ROOT / "run.yaml", STATE_DIR / "server.log", env=env) as server:
        client = LlamaStackClient(base_url=server.base_url)
        dataset_id = f"demo-prefs-{int(time.time())}"
        client.beta.datasets.register(
            purpose="post-training/messages", source={"type": "rows", "rows": train_rows}, dataset_id=dataset_id
        )
        job_uuid = f"demo-{int(time.time())}"
        client.alpha.post_training.preference_optimize(
            **dpo_request(
                job_uuid,
                model_dir,
                dataset_id,
                n_epochs=3,
                max_steps_per_epoch=None,
                batch_size=8,
                lr=3e-3,
                warmup_steps=2,
            )
        )
        print(f"job {job_uuid} submitted (server at {server.base_url}, log {server.log_path})")
        status = _follow(client, job_uuid)

    if status.status != "completed":
        print(f"job ended {status.status}: {status.resources_allocated.get('error')}")
        return 1
    checkpoint = status.checkpoints[-1].path
    before, after = preference_margins(model_dir, heldout_rows), preference_margins(checkpoint, heldout_rows)
    improved = sum(a > b for a, b in zip(after, before, strict=True)) / len(before)
    metrics = status.resources_allocated["metrics"]
    print()
    print(f"held-out pairs: {len(heldout_rows)}          base model   trained model")
    print(f"  preference accuracy           {_share(before):>8.0%}   {_share(after):>12.0%}")
    print(f"  mean log-prob margin          {statistics.mean(before):>8.2f}   {statistics.mean(after):>12.2f}")
    print(f"  pairs whose margin grew                    {improved:>12.0%}")
    print(f"last training step: loss {metrics['loss']:.3f}, reward margin {metrics['rewards/margins']:.3f}")
    print(f"checkpoint (loads with AutoModelForCausalLM.from_pretrained): {checkpoint}")
    return 0


def _follow(client: LlamaStackClient, job_uuid: str):
    last = None
    while True:
        status = client.alpha.post_training.job.status(job_uuid=job_uuid)
        res = status.resources_allocated or {}
        line = f"  {status.status:<11} {res.get('phase', ''):<9}"
        if res.get("total_steps"):
            m = res.get("metrics") or {}
            line += f" step {res['step']}/{res['total_steps']} epoch {res['epoch']}/{res['n_epochs']}"
            if "loss" in m:
                line += f" loss {m['loss']:.3f} margin {m['rewards/margins']:.3f} acc {m['rewards/accuracies']:.2f}"
        if line != last:
            print(line, flush=True)
            last = line
        if status.status in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.5)


def _share(margins: list[float]) -> float:
    return sum(m > 0 for m in margins) / len(margins)


if __name__ == "__main__":
    sys.exit(main())
