"""Padding-free (packed) forwards give what padded ones give, and a packed job trains the same."""

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from trl.trainer.utils import add_fused_lm_head

from llama_stack_provider_trl.recipes import padding_free, training_process
from llama_stack_provider_trl.recipes.padding_free import (
    PaddingFreeUnsupported,
    enable_padding_free,
    flash_varlen_available,
)

from helpers import GQA_SHAPE, LORA, events_of, final_checkpoint, padded_batch, run_recipe


def _padded_and_packed(model_class: type[PreTrainedModel], config: object) -> tuple[PreTrainedModel, PreTrainedModel]:
    torch.manual_seed(0)
    padded = model_class(config)
    packed = copy.deepcopy(padded)
    for model in (padded, packed):
        add_fused_lm_head(model)  # what DPOTrainer does to both policy and reference
    enable_padding_free(packed, max_length=64)
    return padded, packed


@pytest.mark.parametrize(
    ("model_class", "config"),
    [(LlamaForCausalLM, LlamaConfig(**GQA_SHAPE)), (Qwen2ForCausalLM, Qwen2Config(**GQA_SHAPE))],
)
def test_packed_log_probs_and_gradients_equal_the_padded_ones(model_class: type, config: object) -> None:
    padded, packed = _padded_and_packed(model_class, config)
    input_ids, mask = padded_batch([7, 19, 3, 19, 11])
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # the prompt: not scored, as in TRL's completion mask
    calls: list[bool] = []
    attention = padding_free.padding_free_attention

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("cu_seq_lens_q") is not None)
        return attention(*args, **kwargs)

    padding_free.AttentionInterface.register(padding_free.ATTENTION, spy)
    try:
        out_padded = padded(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out_packed = packed(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    finally:
        padding_free.AttentionInterface.register(padding_free.ATTENTION, attention)

    assert calls == [True, True]  # both layers ran packed
    assert out_packed.log_probs.shape == out_padded.log_probs.shape
    torch.testing.assert_close(out_packed.log_probs, out_padded.log_probs, atol=1e-5, rtol=1e-5)
    out_padded.log_probs.sum().backward()
    out_packed.log_probs.sum().backward()
    padded_grads = {name: p.grad for name, p in padded.named_parameters()}
    for name, p in packed.named_parameters():
        torch.testing.assert_close(p.grad, padded_grads[name], atol=1e-5, rtol=1e-4)


def test_calls_that_cannot_be_packed_run_padded_as_before() -> None:
    padded, packed = _padded_and_packed(LlamaForCausalLM, LlamaConfig(**GQA_SHAPE))
    input_ids, mask = padded_batch([5, 9, 2], padding_side="left")  # generation-style batch
    torch.testing.assert_close(
        packed(input_ids=input_ids, attention_mask=mask).logits[mask.bool()],
        padded(input_ids=input_ids, attention_mask=mask).logits[mask.bool()],
    )
    prompt = input_ids[1:2]
    assert torch.equal(
        packed.generate(prompt, max_new_tokens=4, do_sample=False),
        padded.generate(prompt, max_new_tokens=4, do_sample=False),
    )


def test_a_sliding_window_shorter_than_the_sequences_is_refused() -> None:
    mistral = MistralForCausalLM(MistralConfig(**GQA_SHAPE, sliding_window=32))
    with pytest.raises(PaddingFreeUnsupported, match="sliding window of 32 tokens, shorter than max_seq_length 64"):
        enable_padding_free(mistral, max_length=64)
    enable_padding_free(mistral, max_length=32)  # the window never cuts a 32-token sequence


@pytest.mark.parametrize(
    "strategy",
    [
        {},  # full fine-tune, frozen reference copy: both models run packed
        # LoRA: the reference is the same model with its adapters disabled
        {"reference_strategy": "adapters_disabled", "lora": {**LORA, "merge_adapter": False}},
        # the reference log-probs are computed once, when the trainer is built
        {"reference_strategy": "precomputed_log_probs"},
    ],
    ids=["full", "lora", "precomputed_reference"],
)
def test_a_packed_job_trains_like_a_padded_one_and_saves_a_plain_checkpoint(
    tmp_path: Path, tiny_model: Path, strategy: dict[str, Any]
) -> None:
    rows = [
        {"prompt": "What is " + "one plus " * (i % 12) + "one?", "chosen": " two" * (1 + i % 7), "rejected": " no"}
        for i in range(32)
    ]
    runs = {
        name: run_recipe(
            tmp_path / name, tiny_model, rows, shuffle=False, learning_rate=1e-3, padding_free=packed, **strategy
        )
        for name, packed in (("padded", False), ("packed", True))
    }
    losses = {name: [e["metrics"]["loss"] for e in events_of(events, "metrics")] for name, events in runs.items()}
    assert len(losses["packed"]) == 8 and losses["packed"][-1] < losses["packed"][0]
    assert losses["packed"] == pytest.approx(losses["padded"], abs=1e-4)
    assert events_of(runs["packed"], "metrics")[-1]["padding_share"] == 0.0
    assert events_of(runs["padded"], "metrics")[-1]["padding_share"] > 0.1
    # The checkpoint names no custom attention: it loads anywhere, with transformers' default attention
    load = AutoPeftModelForCausalLM if "lora" in strategy else AutoModelForCausalLM
    checkpoint = load.from_pretrained(final_checkpoint(runs["packed"])["path"])
    assert checkpoint.config._attn_implementation == "sdpa"


def test_auto_packs_only_where_the_flash_kernel_runs_and_the_model_can_be_packed(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"prompt": "What is " + "one plus " * (i % 5) + "one?", "chosen": " two" * (1 + i % 3), "rejected": " no"}
        for i in range(8)
    ]
    windowed = tmp_path / "windowed"
    shutil.copytree(tiny_model, windowed)
    config = json.loads((windowed / "config.json").read_text())
    (windowed / "config.json").write_text(json.dumps({**config, "sliding_window": 16}))

    def packed_and_padding(name: str, model: Path) -> tuple[bool, float]:
        events = run_recipe(tmp_path / name, model, rows, padding_free="auto", max_steps_per_epoch=2)
        [setup] = events_of(events, "setup_done")
        return setup["padding_free"], events_of(events, "metrics")[-1]["padding_share"]

    assert not flash_varlen_available(LlamaForCausalLM(LlamaConfig(**GQA_SHAPE)), "cpu", "bf16")
    packed, padded_share = packed_and_padding("cpu", tiny_model)
    assert not packed and padded_share > 0  # no FlashAttention on a CPU: padded batches
    # Where the kernel runs (pretended here: this test has no GPU), a model that can be packed is
    monkeypatch.setattr(training_process, "flash_varlen_available", lambda model, device, precision: True)
    assert packed_and_padding("flash", tiny_model) == (True, 0.0)
    # and one that cannot (a window shorter than max_seq_length) runs padded instead of failing
    assert packed_and_padding("flash-windowed", windowed) == (False, padded_share)


def test_under_autocast_over_fp32_weights_the_flash_kernel_gets_16_bit_inputs_and_unrepeated_kv_heads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The provider's bf16 runs keep fp32 master weights under autocast, where the rotary embedding leaves query and
    # key in fp32. FlashAttention takes 16-bit inputs only: the kernel (pretended here, on CPU) must get them cast.
    # It also shares each K/V head across its query heads itself, so K and V come with their own (fewer) heads.
    _, packed = _padded_and_packed(Qwen2ForCausalLM, Qwen2Config(**GQA_SHAPE))
    input_ids, mask = padded_batch([7, 61, 3])
    seen: list[tuple[Any, ...]] = []

    def kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        seen.append((q.dtype, k.dtype, v.dtype, q.size(1), k.size(1), v.size(1)))
        return (torch.zeros_like(q),)

    monkeypatch.setattr(padding_free, "_flash_kernel_runs", lambda device, dtype, head_dim: dtype == torch.bfloat16)
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed(input_ids=input_ids, attention_mask=mask)
    heads = (GQA_SHAPE["num_attention_heads"], GQA_SHAPE["num_key_value_heads"], GQA_SHAPE["num_key_value_heads"])
    assert seen == [(torch.bfloat16,) * 3 + heads] * GQA_SHAPE["num_hidden_layers"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_packed_batches_run_the_flash_varlen_kernel_and_match_padded_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    padded, packed = _padded_and_packed(Qwen2ForCausalLM, Qwen2Config(**{**GQA_SHAPE, "hidden_size": 256}))
    padded, packed = padded.cuda(), packed.cuda()
    input_ids, mask = padded_batch([7, 61, 3, 64, 30], device="cuda")
    labels = input_ids.masked_fill(mask == 0, -100)
    kernel_calls: list[int] = []
    flash = torch.ops.aten._flash_attention_forward

    def spy(*args: object, **kwargs: object) -> object:
        kernel_calls.append(1)
        return flash(*args, **kwargs)

    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", spy)  # looked up at call time
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out_padded = padded(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out_packed = packed(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    assert len(kernel_calls) == 2  # one per layer
    torch.testing.assert_close(out_packed.log_probs, out_padded.log_probs, atol=0.05, rtol=0.02)
    out_padded.log_probs.sum().backward()
    out_packed.log_probs.sum().backward()
    grads = {name: p.grad for name, p in padded.named_parameters()}
    for name, p in packed.named_parameters():
        assert torch.nn.functional.cosine_similarity(p.grad.flatten(), grads[name].flatten(), dim=0) > 0.99, name
