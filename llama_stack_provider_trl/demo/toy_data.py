"""Small synthetic sets: arithmetic preference pairs (a right answer chosen, a wrong one rejected), SFT rows the
tiny model can learn, and reinforcement prompts with a grader whose reward the tiny model can raise."""

import random


def arithmetic_preferences(n: int, offset: int = 0) -> list[dict[str, str]]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 10, (i * 7) % 10
        rows.append(
            {
                "prompt": f"What is {a} plus {b}?",
                "chosen": f" {a} plus {b} is {a + b}.",
                "rejected": f" I am not sure, maybe {a * b + 1}.",
            }
        )
    return rows


def corpus(rows: list[dict[str, str]]) -> list[str]:
    """Every text in ``rows``: what a tokenizer for them is trained on."""
    return [text for row in rows for text in row.values()]


def as_conversations(rows: list[dict[str, str]]) -> list[dict[str, list[dict[str, str]]]]:
    """The same pairs in TRL's conversational format: a user turn as the prompt, assistant turns as the answers."""
    return [
        {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
        }
        for row in rows
    ]


def with_implicit_prompt(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same pairs in TRL's implicit-prompt format: the prompt written into both answers, no prompt field."""
    return [{"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]} for row in rows]


def repeat_instructions(n: int, seed: int = 0) -> list[dict[str, str]]:
    """SFT rows in Llama Stack's instruct format: repeat three digits. A tiny model learns to copy them, so it
    answers rows it never saw (held out) as well as the ones it memorised."""
    rng = random.Random(seed)
    digits = [" ".join(str(rng.randrange(10)) for _ in range(3)) for _ in range(n)]
    return [{"input_query": f"Repeat {d}.", "expected_answer": f"{d}."} for d in digits]


# OpenAI's multi grader over one string_check: reward 1 when the answer holds the line's token. A tiny random model's
# answers hold it now and then; GRPO makes it every answer within a few dozen steps.
HOLDS_TOKEN_GRADER = {
    "type": "multi",
    "name": "score",
    "graders": {
        "has_token": {
            "type": "string_check",
            "name": "has_token",
            "input": "{{sample.output_text}}",
            "reference": "%{{item.token}}%",
            "operation": "like",
        }
    },
    "calculate_output": "has_token",
}


def token_prompts(n: int, token: str = "5") -> list[dict[str, object]]:
    """OpenAI's reinforcement lines: an arithmetic question as the user's turn, and the token the grader looks for."""
    return [
        {"messages": [{"role": "user", "content": row["prompt"]}], "token": token} for row in arithmetic_preferences(n)
    ]
