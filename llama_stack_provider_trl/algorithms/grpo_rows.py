"""Reinforcement rows, checked in the server before any process starts: one prompt a row, and the item its grader reads.

A row is ``{"prompt": [messages ending with the user's turn], "item": {...}}``: the model answers the prompt, and
the grader scores each answer against the item (its ``{{item.<field>}}`` templates). A front door turns its own
format into these rows (OGX: OpenAI's ``{"messages": [...], <other fields>}`` lines, ogx/training_files.py).
"""

from typing import Any

from llama_stack_provider_trl.algorithms.row_fields import RowError, check_messages


def check_prompt_rows(dataset_id: str, rows: list[dict[str, Any]], data_format: str | None = None) -> list[dict]:
    """The rows as the GRPO recipe reads them, or RowError naming the dataset, the row and the field."""
    checked = []
    for index, row in enumerate(rows):
        where = f"dataset '{dataset_id}' row {index}"
        prompt, item = row.get("prompt"), row.get("item", {})
        if not isinstance(prompt, list):
            raise RowError(f"{where}: field 'prompt' must be a list of messages ending with the user's turn")
        messages = check_messages(where, "prompt", prompt)
        if messages[-1]["role"] != "user":
            raise RowError(
                f"{where}: field 'prompt' ends with a {messages[-1]['role']} message; the last turn is the user's, "
                "which the model answers"
            )
        if not isinstance(item, dict):
            raise RowError(f"{where}: field 'item' must be an object (the fields the grader reads)")
        checked.append({"prompt": messages, "item": item})
    return checked
