"""Bad requests are answered at request time with the right HTTP code and a message naming the field."""

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import llama_stack_client
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.demo.toy_data import as_conversations, with_implicit_prompt

from helpers import dpo_request, register_rows, unique, wait_final


def _optimize(client: LlamaStackClient, request: dict[str, Any]) -> None:
    client.alpha.post_training.preference_optimize(**request)


@pytest.fixture(scope="module")
def dataset_id(client: LlamaStackClient, preference_rows: list[dict[str, str]]) -> str:
    return register_rows(client, preference_rows)


def test_unknown_dataset_is_404(client: LlamaStackClient, tiny_model: Path) -> None:
    with pytest.raises(llama_stack_client.NotFoundError, match="no-such-dataset"):
        _optimize(client, dpo_request(unique("j"), tiny_model, "no-such-dataset"))


def test_a_job_uuid_whose_directory_an_earlier_server_left_is_409_without_the_servers_path(
    client: LlamaStackClient, stack: StackServer, dataset_id: str, tiny_model: Path
) -> None:
    job_uuid = unique("left")
    (Path(stack.env["TRL_OUTPUT_DIR"]) / job_uuid).mkdir(parents=True)
    with pytest.raises(llama_stack_client.ConflictError) as conflict:
        _optimize(client, dpo_request(job_uuid, tiny_model, dataset_id))
    assert f"a job named '{job_uuid}' already exists" in str(conflict.value)
    assert stack.env["TRL_OUTPUT_DIR"] not in str(conflict.value)


def test_duplicate_job_uuid_is_409(client: LlamaStackClient, dataset_id: str) -> None:
    job_uuid = unique("dup")
    # a job that fails fast (its model does not exist) still owns its job_uuid
    _optimize(client, dpo_request(job_uuid, "no-such-org/no-such-model", dataset_id))
    with pytest.raises(llama_stack_client.ConflictError, match=job_uuid):
        _optimize(client, dpo_request(job_uuid, "no-such-org/no-such-model", dataset_id))
    assert wait_final(client, job_uuid).status == "failed"
    with pytest.raises(llama_stack_client.ConflictError, match="already finished"):
        client.alpha.post_training.job.cancel(job_uuid=job_uuid)


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
def test_bad_hyperparameter_is_400_naming_the_field(
    client: LlamaStackClient, tiny_model: Path, dataset_id: str, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(llama_stack_client.BadRequestError, match=field):
        _optimize(client, dpo_request(unique("j"), tiny_model, dataset_id, **change))


@pytest.mark.parametrize("job_uuid", ["", "../escape", "a/b", "x" * 129, ".hidden", "name with space", "ok;rm"])
def test_unsafe_job_uuid_is_400_and_creates_nothing(
    client: LlamaStackClient, stack: StackServer, tiny_model: Path, dataset_id: str, job_uuid: str
) -> None:
    jobs_root = Path(stack.env["TRL_OUTPUT_DIR"])
    listing = lambda: set(jobs_root.iterdir()) | set(jobs_root.parent.iterdir())  # noqa: E731
    before = listing()
    with pytest.raises(llama_stack_client.BadRequestError, match="job_uuid"):
        _optimize(client, dpo_request(job_uuid, tiny_model, dataset_id))
    assert listing() == before


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
def test_malformed_rows_are_400_naming_row_and_field(
    client: LlamaStackClient, tiny_model: Path, rows: list[dict[str, Any]], message: str
) -> None:
    dataset_id = register_rows(client, rows)
    with pytest.raises(llama_stack_client.BadRequestError, match=message):
        _optimize(client, dpo_request(unique("j"), tiny_model, dataset_id))


def test_a_missing_local_model_directory_is_the_403_of_any_place_the_server_trains_no_model_from(
    client: LlamaStackClient, dataset_id: str, tmp_path: Path
) -> None:
    with pytest.raises(llama_stack_client.PermissionDeniedError, match=r"finetuned_model: .* is not a model directory"):
        _optimize(client, dpo_request(unique("j"), tmp_path / "absent", dataset_id))


def test_supervised_fine_tune_without_a_model_is_400_naming_the_field(client: LlamaStackClient) -> None:
    with pytest.raises(llama_stack_client.BadRequestError, match="model: is empty"):
        client.alpha.post_training.supervised_fine_tune(
            job_uuid=unique("sft"), training_config={"n_epochs": 1}, hyperparam_search_config={}, logger_config={}
        )


def test_unknown_job_is_404(client: LlamaStackClient) -> None:
    with pytest.raises(llama_stack_client.NotFoundError, match="no-such-job"):
        client.alpha.post_training.job.status(job_uuid="no-such-job")
    with pytest.raises(llama_stack_client.NotFoundError):
        client.alpha.post_training.job.cancel(job_uuid="no-such-job")
    with pytest.raises(llama_stack_client.NotFoundError):
        client.alpha.post_training.job.artifacts(job_uuid="no-such-job")


def test_a_400_keeps_the_keep_alive_connection(stack: StackServer, tiny_model: Path, dataset_id: str) -> None:
    sockets = []
    with httpx.Client(base_url=stack.base_url, headers={"Connection": "keep-alive"}) as http:
        for _ in range(2):
            response = http.post(
                "/v1alpha/post-training/preference-optimize",
                json=dpo_request(unique("j"), tiny_model, dataset_id, n_epochs=0),
            )
            assert response.status_code == 400
            assert "n_epochs" in response.json()["error"]["message"]
            sockets.append(response.extensions["network_stream"].get_extra_info("socket").getsockname())
    assert sockets[0] == sockets[1]  # the second request reused the first request's connection


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_rnak": 8}, r"hyperparam_search_config: unknown or not per-job keys \['lora_rnak'\]"),
        ({"use_lora": True, "lora_rank": -1}, "hyperparam_search_config: lora_rank"),
        ({"use_lora": True, "qlora": True}, "hyperparam_search_config.qlora: 4-bit QLoRA needs a CUDA device"),
        ({"device": "cuda"}, "not per-job keys"),
        ({"normalize_rewards": True, "dpo_loss_type": "hinge"}, "loss 'hinge' has no length-normalized form"),
    ],
)
def test_bad_per_job_overrides_are_400_naming_the_key(
    client: LlamaStackClient, tiny_model: Path, dataset_id: str, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(llama_stack_client.BadRequestError, match=message):
        _optimize(client, dpo_request(unique("j"), tiny_model, dataset_id, hyperparam_search_config=overrides))


def test_conversational_rows_for_a_tokenizer_without_chat_template_are_400(
    client: LlamaStackClient, tiny_model: Path, preference_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((plain / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    dataset_id = register_rows(client, as_conversations(preference_rows[:4]))
    with pytest.raises(llama_stack_client.BadRequestError, match="has no chat template"):
        _optimize(client, dpo_request(unique("j"), plain, dataset_id, data_format="dialog"))


def test_padding_free_for_a_sliding_window_shorter_than_the_sequences_is_400_unless_auto(
    client: LlamaStackClient, tiny_model: Path, dataset_id: str, tmp_path: Path
) -> None:
    windowed = tmp_path / "windowed"
    shutil.copytree(tiny_model, windowed)
    config = json.loads((windowed / "config.json").read_text())
    (windowed / "config.json").write_text(json.dumps({**config, "sliding_window": 16}))
    request = dpo_request(unique("j"), windowed, dataset_id, hyperparam_search_config={"padding_free": True})
    with pytest.raises(llama_stack_client.BadRequestError, match=r"padding_free: .* sliding window of 16 tokens"):
        _optimize(client, request)
    # auto packs only what can be packed: the same model is accepted, to run padded
    request = dpo_request(unique("j"), windowed, dataset_id, hyperparam_search_config={"padding_free": "auto"})
    _optimize(client, request)
    client.alpha.post_training.job.cancel(job_uuid=request["job_uuid"])


def test_a_validation_set_in_another_format_is_400(
    client: LlamaStackClient, tiny_model: Path, dataset_id: str, preference_rows: list[dict[str, str]]
) -> None:
    validation = register_rows(client, with_implicit_prompt(preference_rows[:4]))
    with pytest.raises(llama_stack_client.BadRequestError, match="validation_dataset_id: its rows"):
        _optimize(client, dpo_request(unique("j"), tiny_model, dataset_id, validation_dataset_id=validation))
