"""A small synthetic preference set: arithmetic questions, a right answer (chosen) and a wrong one (rejected)."""


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
