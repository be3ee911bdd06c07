"""torch_compile: compiled decoder layers give what eager ones give, as one graph, and a compiled job trains so."""

import copy
from pathlib import Path

import pytest
import torch
import torch._inductor.compile_fx  # imported before a test swaps out an aten kernel: importing indexes them all
import torch.nn.functional as F
import torch.utils.flop_counter  # likewise
from torch._dynamo.utils import counters
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM
from trl.trainer.utils import add_fused_lm_head

from llama_stack_provider_trl.recipes import padding_free
from llama_stack_provider_trl.recipes.layer_compile import compile_decoder_layers
from llama_stack_provider_trl.recipes.padding_free import enable_padding_free

from helpers import GQA_SHAPE, events_of, final_checkpoint, padded_batch, run_recipe

_SHAPE = {**GQA_SHAPE, "num_hidden_layers": 3}


def _block_causal_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seq_q: torch.Tensor, *args, **kwargs):
    """What FlashAttention's varlen kernel computes, in plain tensor ops a CPU can run and torch.compile can trace:
    causal attention inside each packed sequence, grouped-query K/V heads shared across their query heads."""
    total = q.size(0)
    sequence = torch.searchsorted(cu_seq_q[1:].long(), torch.arange(total), right=True)
    mask = (sequence[:, None] == sequence[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
    out = F.scaled_dot_product_attention(
        *(x.transpose(0, 1) for x in (q, k, v)), attn_mask=mask, scale=kwargs.get("scale"), enable_gqa=True
    )
    return (out.transpose(0, 1),)


def test_compiled_packed_layers_run_as_one_graph_and_match_the_eager_padded_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The packed path a GPU runs (pretended here: the kernel is the plain-op equivalent above), compiled: every
    # layer and every batch length share one graph with no break, and log-probs and gradients are the eager ones.
    monkeypatch.setattr(padding_free, "_flash_kernel_runs", lambda device, dtype, head_dim: True)
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", _block_causal_flash)
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    padded = Qwen2ForCausalLM(Qwen2Config(**_SHAPE))
    compiled = copy.deepcopy(padded)
    for model in (padded, compiled):
        add_fused_lm_head(model)
    enable_padding_free(compiled, max_length=64)
    assert compile_decoder_layers(compiled) == _SHAPE["num_hidden_layers"]

    for lengths in ([7, 19, 3, 19, 11], [30, 2, 17]):  # a second batch of another packed length
        input_ids, mask = padded_batch(lengths)
        labels = input_ids.masked_fill(mask == 0, -100)
        outputs = [
            m(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True) for m in (padded, compiled)
        ]
        torch.testing.assert_close(outputs[1].log_probs, outputs[0].log_probs, atol=1e-4, rtol=1e-4)
        for model, out in zip((padded, compiled), outputs, strict=True):
            model.zero_grad()
            out.log_probs.sum().backward()
        grads = {name: p.grad for name, p in padded.named_parameters()}
        for name, p in compiled.named_parameters():
            torch.testing.assert_close(p.grad, grads[name], atol=1e-4, rtol=1e-3)

    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1  # three layers, two batch lengths: one compiled graph


def test_the_real_flash_varlen_call_compiles_with_its_backward_for_grouped_kv_heads_and_any_length() -> None:
    # The kernel call itself, as packed attention makes it on a GPU, traced by torch.compile through autograd: meta
    # tensors (shapes, no data) stand in for CUDA ones, so this runs anywhere. One graph for both packed lengths.
    torch._dynamo.reset()
    counters.clear()

    def loss(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu: torch.Tensor, longest: int):
        packed = {"cu_seq_lens_q": cu, "max_length_q": longest, "flash_varlen_dtype": torch.bfloat16}
        out, _ = padding_free.padding_free_attention(torch.nn.Module(), query, key, value, None, **packed)
        return out.float().sum()

    compiled = torch.compile(loss, backend="aot_eager", dynamic=True, fullgraph=True)
    for total, longest in ((100, 60), (130, 64)):
        q, k, v = (
            torch.empty(1, heads, total, 64, device="meta", dtype=torch.bfloat16, requires_grad=True)
            for heads in (14, 2, 2)  # the 0.5B shape's query and K/V heads
        )
        compiled(q, k, v, torch.tensor([0, 40, total], dtype=torch.int32, device="meta"), longest).backward()
        assert (q.grad.shape, k.grad.shape, v.grad.shape) == (q.shape, k.shape, v.shape)
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_a_compiled_job_trains_like_an_eager_one_and_saves_the_same_checkpoint(
    tmp_path: Path, tiny_model: Path
) -> None:
    torch._dynamo.reset()  # other tests in this process compiled other modules
    rows = [
        {"prompt": "What is " + "one plus " * (i % 12) + "one?", "chosen": " two" * (1 + i % 7), "rejected": " no"}
        for i in range(32)
    ]
    runs = {
        name: run_recipe(tmp_path / name, tiny_model, rows, shuffle=False, learning_rate=1e-3, torch_compile=compiled)
        for name, compiled in (("eager", False), ("compiled", True))
    }
    [setup] = events_of(runs["compiled"], "setup_done")
    assert setup["compiled_layers"] == 2
    losses = {name: [e["metrics"]["loss"] for e in events_of(events, "metrics")] for name, events in runs.items()}
    assert len(losses["compiled"]) == 8 and losses["compiled"][-1] < losses["compiled"][0]
    assert losses["compiled"] == pytest.approx(losses["eager"], abs=1e-3)
    # Compiling wraps no module: the checkpoint has the eager run's keys and loads as a plain model
    checkpoints = {name: final_checkpoint(events)["path"] for name, events in runs.items()}
    eager, compiled = (AutoModelForCausalLM.from_pretrained(checkpoints[n]) for n in ("eager", "compiled"))
    assert compiled.state_dict().keys() == eager.state_dict().keys()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_compiled_packed_layers_run_the_flash_kernel_as_one_graph_and_match_eager_padded_ones() -> None:
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    padded = Qwen2ForCausalLM(Qwen2Config(**{**_SHAPE, "hidden_size": 256})).cuda()
    compiled = copy.deepcopy(padded)
    for model in (padded, compiled):
        add_fused_lm_head(model)
    enable_padding_free(compiled, max_length=64)
    compile_decoder_layers(compiled)
    for lengths in ([7, 61, 3, 64, 30], [12, 40]):
        input_ids, mask = padded_batch(lengths, device="cuda")
        labels = input_ids.masked_fill(mask == 0, -100)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = [
                m(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
                for m in (padded, compiled)
            ]
        torch.testing.assert_close(outputs[1].log_probs, outputs[0].log_probs, atol=0.05, rtol=0.02)
        for model, out in zip((padded, compiled), outputs, strict=True):
            model.zero_grad()
            out.log_probs.sum().backward()
        grads = {name: p.grad for name, p in padded.named_parameters()}
        for name, p in compiled.named_parameters():
            assert F.cosine_similarity(p.grad.flatten(), grads[name].flatten(), dim=0) > 0.99, name
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
