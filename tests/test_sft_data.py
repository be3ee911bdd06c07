"""SFT row checks and LoRA module names, in the server: every accepted format, and errors naming row and field."""

import json
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.algorithms.sft_rows import SFTDataError, check_sft_rows
from llama_stack_provider_trl.engine.lora_targets import UnknownLoraModule, lora_target_modules

USER = {"role": "user", "content": "What is 2 plus 3?"}
ASSISTANT = {"role": "assistant", "content": "5."}


@pytest.mark.parametrize(
    ("row", "data_format", "expected"),
    [
        (
            {"input_query": "What is 2 plus 3?", "expected_answer": "5.", "extra": 1},
            "instruct",
            {"prompt": [USER], "completion": [ASSISTANT]},
        ),
        (
            {"chat_completion_input": json.dumps([USER]), "expected_answer": "5."},
            "instruct",
            {"prompt": [USER], "completion": [ASSISTANT]},
        ),
        ({"text": "2 plus 3 is 5."}, "instruct", {"text": "2 plus 3 is 5."}),
        (
            {"prompt": "What is 2 plus 3?", "completion": " 5."},
            "instruct",
            {"prompt": "What is 2 plus 3?", "completion": " 5."},
        ),
        ({"messages": [USER, ASSISTANT]}, "dialog", {"messages": [USER, ASSISTANT]}),
        ({"dialog": [USER, ASSISTANT]}, "dialog", {"messages": [USER, ASSISTANT]}),
        ({"prompt": [USER], "completion": [ASSISTANT]}, "dialog", {"prompt": [USER], "completion": [ASSISTANT]}),
    ],
)
def test_each_sft_format_becomes_trls_format(row: dict[str, Any], data_format: str, expected: dict[str, Any]) -> None:
    assert check_sft_rows("ds", [row], data_format).rows == [expected]
    assert check_sft_rows("ds", [row], None).rows == [expected]  # no data_format: read from the rows


@pytest.mark.parametrize(
    ("rows", "data_format", "message"),
    [
        ([{"question": "?", "answer": "!"}], None, "row 0 has fields ['answer', 'question'], none of the SFT formats"),
        (
            [{"input_query": "a", "expected_answer": "b"}, {"input_query": "c"}],
            None,
            "row 1: field 'expected_answer' is missing",
        ),
        (
            [{"input_query": "a", "expected_answer": "b"}] * 2 + [{"input_query": "c", "expected_answer": "  "}],
            None,
            "row 2: field 'expected_answer' is empty",
        ),
        (
            [{"chat_completion_input": "[{not json", "expected_answer": "b"}],
            None,
            "row 0: field 'chat_completion_input' is not a JSON list of messages",
        ),
        (
            [{"messages": [USER, {"role": "robot", "content": "x"}]}],
            None,
            "row 0: field 'messages' message 1 has role 'robot'",
        ),
        ([{"messages": [USER]}], None, "row 0: field 'messages' has no assistant message"),
        ([{"prompt": [USER], "completion": [USER]}], None, "row 0: field 'completion' starts with a user message"),
        (
            [{"prompt": "a", "completion": "b"}, {"prompt": [USER], "completion": [ASSISTANT]}],
            None,
            "row 1: field 'prompt' is a list of messages but row 0 holds prompt/completion strings",
        ),
        (
            [{"messages": [USER, ASSISTANT]}],
            "instruct",
            "holds messages rows but data_config.data_format is 'instruct'; send data_format 'dialog'",
        ),
        ([], None, "has no rows"),
    ],
)
def test_a_bad_sft_row_is_named_by_index_and_field(
    rows: list[dict[str, Any]], data_format: str | None, message: str
) -> None:
    with pytest.raises(SFTDataError, match="dataset 'ds'") as error:
        check_sft_rows("ds", rows, data_format)
    assert message in str(error.value)


def test_torchtune_lora_names_map_onto_the_models_own_layers(tiny_model: Path) -> None:
    # The upstream integration test's LoRA: q_proj, v_proj, output_proj and the MLP, on a Llama (o_proj)
    targets = lora_target_modules(str(tiny_model), ["q_proj", "v_proj", "output_proj"], mlp=True, output=True)
    assert targets == ["q_proj", "v_proj", "o_proj", "down_proj", "gate_proj", "up_proj", "lm_head"]


def test_a_lora_name_that_matches_no_layer_is_named(tiny_model: Path) -> None:
    with pytest.raises(UnknownLoraModule, match="'qkv_proj' matches no attention layer") as error:
        lora_target_modules(str(tiny_model), ["q_proj", "qkv_proj"], mlp=False, output=False)
    assert "o_proj" in str(error.value)  # and says which layers there are
