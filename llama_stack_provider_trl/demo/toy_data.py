"""Small synthetic sets: arithmetic preference pairs (a right answer chosen, a wrong one rejected), and SFT rows
the tiny model can learn."""

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
