"""Row checks in the server: the three TRL preference formats, and an error that names the row and field."""

from typing import Any

import pytest

from llama_stack_provider_trl.algorithms.dpo_rows import PreferenceDataError, check_preference_rows
from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, as_conversations, with_implicit_prompt

STANDARD = arithmetic_preferences(3)
CONVERSATIONAL = as_conversations(STANDARD)


def test_standard_rows_keep_only_the_preference_fields() -> None:
    checked = check_preference_rows("ds", [{**STANDARD[0], "extra": 1}], "instruct")
    assert (checked.shape, checked.implicit_prompt) == ("standard", False)
    assert checked.rows == [STANDARD[0]]


def test_conversational_rows_pass_through_as_messages() -> None:
    checked = check_preference_rows("ds", CONVERSATIONAL, "dialog")
    assert (checked.shape, checked.implicit_prompt) == ("conversational", False)
    assert checked.rows == CONVERSATIONAL


@pytest.mark.parametrize(
    "rows",
    [
        with_implicit_prompt(STANDARD),
        [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in CONVERSATIONAL],
    ],
)
def test_implicit_prompt_rows_are_accepted_without_a_prompt_field(rows: list[dict[str, Any]]) -> None:
    checked = check_preference_rows("ds", rows, None)
    assert checked.implicit_prompt and checked.fields == ("chosen", "rejected")


@pytest.mark.parametrize(
    ("rows", "data_format", "message"),
    [
        ([], "instruct", "has no rows"),
        ([STANDARD[0], {**STANDARD[1], "chosen": None}], "instruct", "row 1: field 'chosen' is missing"),
        ([STANDARD[0], {**STANDARD[1], "rejected": float("nan")}], "instruct", "row 1: field 'rejected' is missing"),
        ([{**STANDARD[0], "prompt": "  "}], "instruct", "row 0: field 'prompt' is empty"),
        ([{**STANDARD[0], "chosen": 3}], "instruct", "row 0: field 'chosen' must be a string or a list of messages"),
        ([STANDARD[0], CONVERSATIONAL[1]], "instruct", "row 1: field 'prompt' is a list of messages"),
        (CONVERSATIONAL, "instruct", "data_format is 'instruct'; send data_format 'dialog'"),
        (STANDARD, "dialog", "send data_format 'instruct'"),
        ([{**CONVERSATIONAL[0], "chosen": []}], "dialog", "field 'chosen' is an empty list"),
        ([{**CONVERSATIONAL[0], "chosen": [{"role": "robot", "content": "x"}]}], "dialog", "message 0 has role"),
        ([{**CONVERSATIONAL[0], "chosen": [{"role": ["user"], "content": "x"}]}], "dialog", r"has role \['user'\]"),
        ([{**CONVERSATIONAL[0], "rejected": [{"role": "assistant"}]}], "dialog", "needs non-empty string content"),
        ([{**CONVERSATIONAL[0], "prompt": ["hi"]}], "dialog", "must be an object with role and content"),
        ([{"chosen": "abc", "rejected": "xyz"}], None, "must start with the same text"),
        ([{"chosen": "Q? yes", "rejected": "Q? yes, sure"}], None, "must start with the same text"),
        (
            [{"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}],
            None,
            "must start with the same messages",
        ),
        (with_implicit_prompt(STANDARD[:1]) + STANDARD[1:2], None, "row 1: has a 'prompt' field but row 0 does not"),
    ],
)
def test_bad_rows_name_the_row_and_the_field(rows: list[dict[str, Any]], data_format: str | None, message: str) -> None:
    with pytest.raises(PreferenceDataError, match=message):
        check_preference_rows("ds", rows, data_format)
