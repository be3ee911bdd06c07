"""Bad 0.6.1 requests refused in-process by the engine both front doors call: each RequestError carries the status
the door answers with, the caller's field and the fix, and nothing is written. test_request_errors.py keeps one
real-server test per status."""

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.demo.toy_data import as_conversations, with_implicit_prompt
from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.engine.jobs import JobAlreadyFinished
from llama_stack_provider_trl.llama_stack.access import job_access
from llama_stack_provider_trl.llama_stack.stack_api import PreferenceOptimizeRequest, SupervisedFineTuneRequest
from llama_stack_provider_trl.llama_stack.stack_requests import dpo_job_request, sft_job_request

from helpers import dpo_request


class Datasets:
    """Admission's sources without a server: no registered models, and the rows each dataset id holds."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def register(self, rows: list[dict[str, Any]]) -> str:
        dataset_id = f"ds-{len(self.rows)}"
        self.rows[dataset_id] = rows
        return dataset_id

    async def registered_model_path(self, model: str) -> None:
        return None

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        return self.rows[dataset_id.value][:limit]


class Door:
    """The engine as the 0.6.1 door drives it (not started: an admitted job would stay queued)."""

    def __init__(self, root: Path, preference_rows: list[dict[str, str]]) -> None:
        settings = {"output_dir": str(root / "jobs"), "job_store_path": str(root / "jobs.db")}
        self.engine = Engine(TrlPostTrainingConfig(**settings), job_access([]))
        self.engine.output_root.mkdir(parents=True, exist_ok=True)  # what start() does, besides watching jobs
        self.datasets = Datasets()
        self.dataset_id = self.datasets.register(preference_rows)

    def files(self) -> set[Path]:
        return set(self.engine.output_root.rglob("*")) | set(self.engine.output_root.parent.iterdir())

    def refusal(self, request: dict[str, Any], sft: bool = False) -> RequestError:
        """The refusal of a DPO (or SFT) request: nothing written, nothing queued."""
        before = self.files()
        if sft:
            job_request = sft_job_request(SupervisedFineTuneRequest.model_validate(request))
        else:
            job_request = dpo_job_request(PreferenceOptimizeRequest.model_validate(request))
        with pytest.raises(RequestError) as refused:
            asyncio.run(self.engine.create(job_request, self.datasets))
        assert self.files() == before and self.engine.jobs.list() == []
        return refused.value


@pytest.fixture
def door(tmp_path: Path, preference_rows: list[dict[str, str]]) -> Iterator[Door]:
    opened = Door(tmp_path, preference_rows)
    yield opened
    opened.engine.jobs.shutdown()


def test_a_job_uuid_taken_even_by_a_finished_job_is_a_409_and_a_finished_job_refuses_cancel(
    door: Door, tiny_model: Path
) -> None:
    request = dpo_request("dup", tiny_model, door.dataset_id)
    asyncio.run(door.engine.create(dpo_job_request(PreferenceOptimizeRequest.model_validate(request)), door.datasets))
    door.engine.cancel("dup")
    assert door.engine.jobs.get("dup").status == "cancelled"  # a finished job still owns its job_uuid

    with pytest.raises(RequestError) as refused:
        asyncio.run(
            door.engine.create(dpo_job_request(PreferenceOptimizeRequest.model_validate(request)), door.datasets)
        )
    assert (refused.value.status, refused.value.field) == (409, "job_uuid") and "'dup'" in str(refused.value)
    with pytest.raises(JobAlreadyFinished, match="already finished"):  # the door's 409: tests/test_job_faults.py
        door.engine.cancel("dup")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"algorithm_config": {"beta": 0.1, "loss_type": "kto_pair"}}, "sigmoid, hinge, ipo"),
        ({"algorithm_config": {"beta": 0.0}}, "algorithm_config.beta"),
        ({"algorithm_config": {"beta": -1.0}}, "algorithm_config.beta"),
        ({"n_epochs": 0}, "training_config.n_epochs"),
        ({"batch_size": 0}, "training_config.data_config.batch_size"),
        ({"lr": 0.0}, "training_config.optimizer_config.lr"),
        ({"lr": -1e-5}, "training_config.optimizer_config.lr"),
        ({"gradient_accumulation_steps": 0}, "training_config.gradient_accumulation_steps"),
        ({"max_steps_per_epoch": 0}, "training_config.max_steps_per_epoch"),
        ({"dtype": "int8"}, "training_config.dtype"),
        ({"dtype": "fp16"}, "fp16 mixed precision needs a GPU"),
    ],
)
def test_a_bad_hyperparameter_is_a_400_naming_the_field(
    door: Door, tiny_model: Path, change: dict[str, Any], field: str
) -> None:
    refused = door.refusal(dpo_request("j", tiny_model, door.dataset_id, **change))
    assert refused.status == 400 and field in str(refused)


@pytest.mark.parametrize("job_uuid", ["", "../escape", "a/b", "x" * 129, ".hidden", "name with space", "ok;rm"])
def test_an_unsafe_job_uuid_is_a_400_and_creates_nothing(door: Door, tiny_model: Path, job_uuid: str) -> None:
    refused = door.refusal(dpo_request(job_uuid, tiny_model, door.dataset_id))
    assert (refused.status, refused.field) == (400, "job_uuid")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c"}],
            "row 1: field 'rejected' is missing",
        ),
        ([{"prompt": "p", "chosen": "", "rejected": "r"}], "row 0: field 'chosen' is empty"),
        (
            [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2 + [{"prompt": 5, "chosen": "c", "rejected": "r"}],
            "row 2: field 'prompt' must be a string",
        ),
        ([{"question": "p", "answer": "c"}], "row 0: field 'chosen' is missing"),
        (
            [{"prompt": [{"role": "user", "content": "p"}], "chosen": "c", "rejected": "r"}],
            "row 0: field 'prompt' is a list of messages but the dataset's rows are standard",
        ),
    ],
)
def test_malformed_rows_are_a_400_naming_the_row_and_field(
    door: Door, tiny_model: Path, rows: list[dict[str, Any]], message: str
) -> None:
    refused = door.refusal(dpo_request("j", tiny_model, door.datasets.register(rows)))
    assert refused.status == 400 and message in str(refused)


def test_supervised_fine_tune_without_a_model_is_a_400_naming_the_field(door: Door) -> None:
    request = {"job_uuid": "sft", "training_config": {"n_epochs": 1}, "hyperparam_search_config": {}}
    refused = door.refusal({**request, "logger_config": {}}, sft=True)
    assert refused.status == 400 and "model: is empty" in str(refused)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_rnak": 8}, "hyperparam_search_config: unknown or not per-job keys ['lora_rnak']"),
        ({"use_lora": True, "lora_rank": -1}, "hyperparam_search_config: lora_rank"),
        ({"use_lora": True, "qlora": True}, "hyperparam_search_config.qlora: 4-bit QLoRA needs a CUDA device"),
        ({"device": "cuda"}, "not per-job keys"),
        ({"normalize_rewards": True, "dpo_loss_type": "hinge"}, "loss 'hinge' has no length-normalized form"),
    ],
)
def test_bad_per_job_overrides_are_a_400_naming_the_key(
    door: Door, tiny_model: Path, overrides: dict[str, Any], message: str
) -> None:
    refused = door.refusal(dpo_request("j", tiny_model, door.dataset_id, hyperparam_search_config=overrides))
    assert refused.status == 400 and message in str(refused)


def test_conversational_rows_for_a_tokenizer_without_a_chat_template_are_a_400(
    door: Door, tiny_model: Path, preference_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((plain / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    dataset_id = door.datasets.register(as_conversations(preference_rows[:4]))
    refused = door.refusal(dpo_request("j", plain, dataset_id, data_format="dialog"))
    assert refused.status == 400 and "has no chat template" in str(refused)


def test_padding_free_for_a_sliding_window_shorter_than_the_sequences_is_a_400_unless_auto(
    door: Door, tiny_model: Path, tmp_path: Path
) -> None:
    windowed = tmp_path / "windowed"
    shutil.copytree(tiny_model, windowed)
    config = json.loads((windowed / "config.json").read_text())
    (windowed / "config.json").write_text(json.dumps({**config, "sliding_window": 16}))
    refused = door.refusal(dpo_request("j", windowed, door.dataset_id, hyperparam_search_config={"padding_free": True}))
    assert refused.status == 400 and "sliding window of 16 tokens" in str(refused)
    assert refused.field == "hyperparam_search_config.padding_free"
    # auto packs only what can be packed: the same model is accepted, to run padded
    request = dpo_request("j", windowed, door.dataset_id, hyperparam_search_config={"padding_free": "auto"})
    asyncio.run(door.engine.create(dpo_job_request(PreferenceOptimizeRequest.model_validate(request)), door.datasets))
    assert door.engine.jobs.get("j").status == "scheduled"


def test_a_validation_set_in_another_format_is_a_400(
    door: Door, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    validation = door.datasets.register(with_implicit_prompt(preference_rows[:4]))
    refused = door.refusal(dpo_request("j", tiny_model, door.dataset_id, validation_dataset_id=validation))
    assert refused.status == 400 and "validation_dataset_id: its rows" in str(refused)
