"""The GRPO recipe run in-process on the tiny model with OpenAI's graders: the metrics events carry the rewards (a
multi grader's sub-rewards, KL, answer length, clipped share), a validation file is scored every eval_steps steps,
and the final checkpoint keeps the last rewards. (tests_ogx/test_reinforcement_jobs.py shows the reward rising.)"""

import json
from pathlib import Path
from typing import Any

from llama_stack_provider_trl.demo.toy_data import HOLDS_TOKEN_GRADER, token_prompts

from helpers import events_of, final_checkpoint, run_recipe

# One engine row a prompt, as the server leaves them: the prompt, and the line's other fields as the grader's item
PROMPTS = [{"prompt": line["messages"], "item": {"token": line["token"]}} for line in token_prompts(8)]


def _grpo(**spec: Any) -> dict[str, Any]:
    return {
        "grader": HOLDS_TOKEN_GRADER,
        "num_generations": 8,
        "max_completion_length": 16,
        "temperature": 1.0,
        "top_p": 1.0,
        "beta": 0.0,
        "loss_type": "dapo",
        "batch_size": 2,
        "learning_rate": 5e-3,
        "save_every_epoch": False,
        **spec,
    }


def test_a_validation_file_is_rewarded_every_eval_steps(tmp_path: Path, tiny_model: Path) -> None:
    events = run_recipe(
        tmp_path,
        tiny_model,
        PROMPTS,
        eval_rows=PROMPTS[:2],
        algorithm="grpo",
        **_grpo(n_epochs=1, eval_steps=2, num_generations_eval=4, beta=0.1),
    )
    [setup] = events_of(events, "setup_done")
    assert (setup["steps_per_epoch"], setup["total_steps"]) == (4, 4)  # 8 prompts, 2 a step
    evaluations = events_of(events, "eval")
    assert [e["step"] for e in evaluations] == [2, 4]
    assert all(0.0 <= e["reward"] <= 1.0 for e in evaluations)
    rewards = [e["reward"] for e in events_of(events, "metrics") if e["reward"]]
    assert len(rewards) == 4 and all(r["kl"] is not None and set(r["sub_rewards"]) == {"has_token"} for r in rewards)
    assert rewards[-1]["completion_length"] > 0 and rewards[-1]["clipped_ratio"] is not None
    final = final_checkpoint(events)
    assert (final["reward"], final["eval_reward"]) == (rewards[-1]["mean"], evaluations[-1]["reward"])
    assert json.loads((tmp_path / "job" / "job.json").read_text())["num_generations_eval"] == 4
