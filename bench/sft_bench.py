"""SFT: the provider against raw TRL's SFTTrainer on the same work, alternating A B A B in one run.

    python bench/sft_bench.py [--steps N] [--bs B] [--reps R]

Workload: the tests' tiny Llama and N x B instruct rows (repeat three digits): one epoch of N steps, full
fine-tune. Arms:

  provider   a real `llama stack run` server and llama-stack-client: supervised_fine_tune, provider defaults
  raw_trl    this file with --raw JOB_DIR: SFTTrainer called directly with the settings that provider job resolved
             (precision, packing, batch, steps, lr, the rows in TRL's format), measured the provider's way

Prints per arm the median real tokens/s and the final loss, then `provider/raw_trl sft tokens_per_s ratio: X`.
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ab_runs import parse_args, run_raw_trl, tiny_model  # bench/ is on the path of a script run from it

REPO_ROOT = Path(__file__).resolve().parents[1]
FINAL = ("completed", "failed", "cancelled")


def raw_trl(job_dir: Path) -> None:
    """The raw-TRL arm, in its own process like the provider's job: prints one RESULT line."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from llama_stack_provider_trl.recipes.padding_free import enable_packed_attention
    from llama_stack_provider_trl.recipes.throughput import ThroughputMeter

    spec = json.loads((job_dir / "job.json").read_text())
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    [setup] = [e for e in events if e["event"] == "setup_done"]
    precision, packed = setup["precision"], setup["padding_free"]
    rows = [json.loads(line) for line in (job_dir / "train.jsonl").read_text().splitlines()]
    meter = ThroughputMeter(1.0, None)

    class Meter(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                meter.update(state.global_step, float(logs["num_tokens"]))

    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    if packed:
        enable_packed_attention(model, spec["max_seq_length"])
    cuda = spec["device"].startswith("cuda")
    args = SFTConfig(
        output_dir=str(job_dir / "raw_trl_state"),
        seed=spec["seed"],
        max_steps=setup["total_steps"],
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"],
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        max_length=spec["max_seq_length"],
        packing=packed,
        padding_free=packed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if spec["shuffle"] and spec["group_by_length"] else "random",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        callbacks=[Meter()],
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    print("RESULT " + json.dumps({"tokens_per_s": meter.tokens_per_s, "final_loss": losses[-1]}), flush=True)


def main() -> None:
    a = parse_args(__doc__, "sft", 8)
    if a.raw:
        raw_trl(a.raw)
        return

    from llama_stack_client import LlamaStackClient

    from llama_stack_provider_trl.demo.requests import sft_request
    from llama_stack_provider_trl.demo.stack_server import StackServer
    from llama_stack_provider_trl.demo.toy_data import repeat_instructions

    model = tiny_model(a.workdir)
    jobs_root = a.workdir / "jobs"
    env = {"SQLITE_STORE_DIR": str(a.workdir / "store"), "TRL_OUTPUT_DIR": str(jobs_root), "HF_HUB_OFFLINE": "1"}
    results: dict[str, list[dict[str, Any]]] = {"provider": [], "raw_trl": []}
    with StackServer(REPO_ROOT / "run.yaml", a.workdir / "server.log", env=env) as server:
        client = LlamaStackClient(base_url=server.base_url, timeout=120)
        dataset_id = f"sft-bench-{time.time_ns()}"
        rows = repeat_instructions(a.steps * a.bs)
        client.beta.datasets.register(
            purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
        )
        for rep in range(a.reps):  # A B A B: drift in the machine's speed hits both arms alike
            job_uuid = f"sft-bench-{time.time_ns()}"
            request = sft_request(job_uuid, model, dataset_id, max_steps_per_epoch=None, batch_size=a.bs, lr=1e-3)
            client.alpha.post_training.supervised_fine_tune(
                **request | {"hyperparam_search_config": {"save_every_epoch": False}}
            )
            while (status := client.alpha.post_training.job.status(job_uuid=job_uuid)).status not in FINAL:
                time.sleep(0.5)
            resources = status.resources_allocated
            if status.status != "completed":
                sys.exit(f"provider job {status.status}: {resources['error']}")
            results["provider"].append(
                {"tokens_per_s": resources["tokens_per_s"], "final_loss": resources["metrics"]["loss"]}
            )
            run_raw_trl(__file__, resources["job_dir"], rep, results)
    medians = {arm: statistics.median(r["tokens_per_s"] for r in runs) for arm, runs in results.items()}
    for arm, runs in results.items():
        print(f"{arm:<9} tokens/s {medians[arm]:.0f}  final loss {runs[-1]['final_loss']:.3f}")
    print(f"provider/raw_trl sft tokens_per_s ratio: {medians['provider'] / medians['raw_trl']:.3f}")


if __name__ == "__main__":
    main()
