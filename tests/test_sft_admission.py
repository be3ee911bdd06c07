"""SFT request resolution and checkpoint names, without a server: what the request's fields become."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.algorithms.sft import SFTJobSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.demo.requests import dpo_request, sft_request
from llama_stack_provider_trl.engine.admission import admit
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.llama_stack.stack_api import PreferenceOptimizeRequest, SupervisedFineTuneRequest
from llama_stack_provider_trl.llama_stack.stack_requests import dpo_job_request, sft_job_request


class Rows:
    """Admission's sources without a server: no registered models; every dataset holds 8 instruct rows or pairs."""

    async def registered_model_path(self, model: str) -> None:
        return None

    async def dataset_rows(self, dataset_id: Given[str], limit: int) -> list[dict[str, Any]]:
        if dataset_id.value == "prefs":
            return [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8
        return [{"input_query": "Repeat 1.", "expected_answer": "1."}] * 8


def _admit(root: Path, job_request: Any, checkpoint_path: Callable[[str], str | None] = lambda _: None) -> Any:
    admitted = admit(
        job_request,
        TrlPostTrainingConfig(),
        output_root=root.resolve(),
        device="cpu",
        job_exists=lambda _: False,
        sources=Rows(),
        checkpoint_path=checkpoint_path,
    )
    return asyncio.run(admitted).spec


def _sft(root: Path, model: str | Path = "org/model", **request: Any) -> SFTJobSpec:
    body = sft_request("job", model, "rows", **request)
    return _admit(root, sft_job_request(SupervisedFineTuneRequest.model_validate(body)))


def test_a_full_fine_tune_trains_on_the_answers_and_packs_only_when_asked_or_by_default(tmp_path: Path) -> None:
    spec = _sft(tmp_path)
    assert (spec.algorithm, spec.lora, spec.completion_only_loss) == ("sft", None, True)
    assert spec.padding_free == "auto"  # unset: the provider config's default (packed where FlashAttention runs)
    data = {
        "dataset_id": "rows",
        "batch_size": 2,
        "shuffle": True,
        "data_format": "instruct",
        "packed": True,
        "train_on_input": True,
    }
    spec = _sft(tmp_path, data_config=data)
    assert (spec.padding_free, spec.completion_only_loss) == (True, False)
    assert _sft(tmp_path, data_config={**data, "packed": False}).padding_free is False


def test_sft_lora_maps_torchtune_names_and_merges_unless_told_not_to(tmp_path: Path, tiny_model: Path) -> None:
    lora = {
        "type": "LoRA",
        "lora_attn_modules": ["k_proj", "output_proj"],
        "apply_lora_to_mlp": False,
        "apply_lora_to_output": True,
        "rank": 4,
        "alpha": 8,
        "use_dora": True,
    }
    spec = _sft(tmp_path, tiny_model, algorithm_config=lora)
    assert spec.lora is not None
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.use_dora, spec.lora.merge_adapter) == (4, 8, True, True)
    assert spec.lora.target_modules == ["k_proj", "o_proj", "lm_head"]
    spec = _sft(tmp_path, tiny_model, algorithm_config=lora, hyperparam_search_config={"merge_adapter": False})
    assert spec.lora is not None and spec.lora.merge_adapter is False


def test_a_checkpoint_identifier_names_that_checkpoint_and_only_inside_the_output_dir(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    inside, outside = root / "sft-1" / "checkpoints" / "final", tmp_path / "elsewhere"
    for model_dir in (inside, outside):
        model_dir.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (model_dir / name).write_text("{}")
    checkpoints = {"sft-1-final": str(inside), "sft-2-final": str(outside), "sft-3-final": f"{inside}/../../../.."}
    request = dpo_request("dpo", "sft-1-final", "prefs")
    spec = _admit(root, dpo_job_request(PreferenceOptimizeRequest.model_validate(request)), checkpoints.get)
    assert spec.model == str(inside)
    for escaping in ("sft-2-final", "sft-3-final"):
        request = dpo_request("dpo", escaping, "prefs")
        with pytest.raises(RequestError, match=f"finetuned_model: checkpoint '{escaping}' is no longer in the output"):
            _admit(root, dpo_job_request(PreferenceOptimizeRequest.model_validate(request)), checkpoints.get)


def test_dpo_only_overrides_are_refused_for_sft_naming_them(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"hyperparam_search_config: \['dpo_loss_type'\] apply to DPO only"):
        _sft(tmp_path, hyperparam_search_config={"dpo_loss_type": "ipo"})
