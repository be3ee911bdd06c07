"""Reinforcement fine-tuning: the provider against raw TRL's GRPOTrainer on the same work, alternating A B A B.

    .venv-ogx/bin/python bench/grpo_bench.py [--steps N] [--bs B] [--generations G] [--tokens T] [--reps R]

Workload: the tests' tiny Llama, N x B arithmetic questions, the tests' grader (the answer holds "5"), G answers per
prompt of at most T tokens: one epoch of N steps, full fine-tune. Arms:

  provider   a real `ogx run ogx-run.yaml` and the openai client: method.type reinforcement, the settings in trl
  raw_trl    this file with --raw JOB_DIR: GRPOTrainer called directly with the settings that provider job resolved
             (batch, answers, lengths, sampling, beta, loss, lr, seed, the same prompts and the same grader compiled
             by llama_stack_provider_trl.graders), measured the provider's way

Both count completion tokens a second: the answers' tokens (TRL's completions/mean_length x answers per step) from
the fourth step to the last, over the time between those steps' logs. Prints per arm the median and the last mean
reward, then `provider/raw_trl grpo completion_tokens_per_s ratio: X`.
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ab_runs import parse_args, run_raw_trl, tiny_model  # bench/ is on the path of a script run from it

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FINAL = ("succeeded", "failed", "cancelled")
WARMUP_STEPS = 3


def completion_tokens_per_s(logs: list[tuple[float, int, float]], answers_per_step: int) -> float:
    """(time, step, mean answer length) of each logged step -> answer tokens a second after the warm-up steps."""
    after = [log for log in logs if log[1] > WARMUP_STEPS]
    [start] = [log for log in logs if log[1] == WARMUP_STEPS]
    tokens = sum(length * answers_per_step for _, _, length in after)
    return tokens / (after[-1][0] - start[0])


def raw_trl(job_dir: Path) -> None:
    """The raw-TRL arm, in its own process like the provider's job: prints one RESULT line."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from llama_stack_provider_trl.graders import reward_function

    spec = json.loads((job_dir / "job.json").read_text())
    rows = [json.loads(line) for line in (job_dir / "train.jsonl").read_text().splitlines()]
    steps: list[tuple[float, int, float]] = []
    rewards: list[float] = []

    class Meter(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                steps.append((time.time(), state.global_step, float(logs["completions/mean_length"])))
                rewards.append(float(logs["reward"]))

    answers = spec["batch_size"] * spec["num_generations"]
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    [setup] = [e for e in events if e["event"] == "setup_done"]
    args = GRPOConfig(
        output_dir=str(job_dir / "raw_trl_state"),
        seed=spec["seed"],
        max_steps=setup["total_steps"],
        per_device_train_batch_size=answers,
        learning_rate=spec["learning_rate"],
        optim="adamw_torch",
        num_generations=spec["num_generations"],
        max_completion_length=spec["max_completion_length"],
        temperature=spec["temperature"],
        top_p=spec["top_p"],
        beta=spec["beta"],
        loss_type=spec["loss_type"],
        shuffle_dataset=spec["shuffle"],
        gradient_checkpointing=spec["gradient_checkpointing"],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32),
        reward_funcs=[reward_function(spec["grader"], spec["grader_settings"])],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"], "item": json.dumps(r["item"])} for r in rows]),
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        callbacks=[Meter()],
    )
    trainer.train()
    result = {"completion_tokens_per_s": completion_tokens_per_s(steps, answers), "last_reward": rewards[-1]}
    print("RESULT " + json.dumps(result), flush=True)


def provider_result(job_dir: Path) -> dict[str, float]:
    """The provider job's completion tokens a second and last mean reward, from its metrics events."""
    spec = json.loads((job_dir / "job.json").read_text())
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in events if e["event"] == "metrics" and e.get("reward")]
    logs = [(e["time"], e["step"], e["reward"]["completion_length"]) for e in metrics]
    answers = spec["batch_size"] * spec["num_generations"]
    return {
        "completion_tokens_per_s": completion_tokens_per_s(logs, answers),
        "last_reward": metrics[-1]["reward"]["mean"],
    }


def main() -> None:
    a = parse_args(__doc__, "grpo", 2, generations=8, tokens=16)
    if a.raw:
        raw_trl(a.raw)
        return

    import openai

    from llama_stack_provider_trl.demo import stack_server
    from llama_stack_provider_trl.demo.toy_data import HOLDS_TOKEN_GRADER, token_prompts

    model = tiny_model(a.workdir)
    lines = token_prompts(a.steps * a.bs)
    results: dict[str, list[dict[str, Any]]] = {"provider": [], "raw_trl": []}
    home = a.workdir / f"server-{time.time_ns()}"
    with stack_server.ogx_server(REPO_ROOT / "ogx-run.yaml", home, Path(sys.prefix)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=120)
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        training_file = client.files.create(file=("prompts.jsonl", data), purpose="fine-tune").id
        for rep in range(a.reps):  # A B A B: drift in the machine's speed hits both arms alike
            hyperparameters = {"batch_size": a.bs, "n_epochs": 1, "learning_rate_multiplier": 5000}
            job = client.fine_tuning.jobs.create(
                model=str(model),
                training_file=training_file,
                method={
                    "type": "reinforcement",
                    "reinforcement": {"grader": HOLDS_TOKEN_GRADER, "hyperparameters": hyperparameters},
                },
                extra_body={
                    "trl": {
                        "num_generations": a.generations,
                        "max_completion_length": a.tokens,
                        "save_every_epoch": False,
                    }
                },
            )
            while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in FINAL:
                time.sleep(0.5)
            if job.status != "succeeded":
                sys.exit(f"provider job {job.status}: {job.error}")
            job_dir = home / "ogx" / "jobs" / job.id
            results["provider"].append(provider_result(job_dir))
            run_raw_trl(__file__, str(job_dir), rep, results)
    medians = {arm: statistics.median(r["completion_tokens_per_s"] for r in runs) for arm, runs in results.items()}
    for arm, runs in results.items():
        print(f"{arm:<9} completion tokens/s {medians[arm]:.0f}  last mean reward {runs[-1]['last_reward']:.3f}")
    print(f"provider/raw_trl grpo completion_tokens_per_s ratio: {medians['provider'] / medians['raw_trl']:.3f}")


if __name__ == "__main__":
    main()
