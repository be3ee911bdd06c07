"""Padding-free forward passes: a right-padded batch runs as one packed row of its real tokens.

TRL's DPOTrainer (the pinned version: docs/versions.md) pads every batch (its own ``padding_free`` is
disabled), and on chat-like data a third of each batch or more is padding that the GPU computes anyway.
``enable_padding_free(model)`` patches the model's backbone: a right-padded batch is packed into one row of
real tokens with per-sequence position ids, runs through the layers with a variable-length attention that never
crosses a sequence boundary, and its hidden states are scattered back to the padded layout. Everything
around the backbone (TRL's fused LM head, the DPO losses, PEFT adapters, the reference model) sees the
same shapes as before, so the result equals the padded forward up to float rounding.

Attention: on CUDA in bf16/fp16, PyTorch's FlashAttention variable-length kernel (no padding, no mask);
elsewhere, causal SDPA over each sequence in turn. Calls that are not packed (no ``cu_seq_lens_q``)
run plain SDPA with the mask transformers builds for it, so generation and left padding still work.
"""

import functools
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "provider_padding_free"


class PaddingFreeUnsupported(ValueError):
    """The model's architecture cannot run packed."""


def padding_free_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    flash_varlen_dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: query (1, heads, tokens, dim), key/value (1, kv_heads, tokens, dim).
    ``flash_varlen_dtype``: set by the packed forward when FlashAttention's varlen kernel runs, in this dtype."""
    if cu_seq_lens_q is None or max_length_q is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # (tokens, heads, dim): the layout both kernels below take. Grouped-query K/V keep their fewer heads: both
    # kernels share each K/V head across its group of query heads without a repeated copy.
    q, k, v = (x[0].transpose(0, 1).contiguous() for x in (query, key, value))
    if flash_varlen_dtype is not None:
        # Autocast casts SDPA's inputs but not a direct aten call's. Under fp32 master weights the rotary embedding
        # leaves query and key in fp32, and FlashAttention takes 16-bit inputs only.
        q, k, v = (x.to(flash_varlen_dtype) for x in (q, k, v))
        out = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, dropout, True, False, scale=scaling
        )[0]
    else:
        bounds = cu_seq_lens_q.tolist()
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[start:end].transpose(0, 1),
                    k[start:end].transpose(0, 1),
                    v[start:end].transpose(0, 1),
                    dropout_p=dropout,
                    is_causal=True,
                    scale=scaling,
                    enable_gqa=k.size(1) != q.size(1),
                ).transpose(0, 1)
                for start, end in itertools.pairwise(bounds)
            ]
        )
    return out.unsqueeze(0), None


def _flash_kernel_runs(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    return (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and head_dim % 8 == 0
        and head_dim <= 256
        and torch.backends.cuda.flash_sdp_enabled()
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


def flash_varlen_available(model: PreTrainedModel, device: str, precision: str) -> bool:
    """Whether ``model``'s packed attention would run FlashAttention's variable-length kernel when training on
    ``device`` in ``precision`` (bf16/fp16 on a CUDA GPU of compute capability 8.0+). Elsewhere packed batches
    run causal SDPA one sequence at a time, which is only faster when padding is heavy and the model large."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None or not device.startswith("cuda"):
        return False
    head_dim = _head_dim(model)
    return head_dim is not None and _flash_kernel_runs(torch.device(device), dtype, head_dim)


def _flash_varlen_dtype(model: PreTrainedModel, device: torch.device) -> torch.dtype | None:
    """The dtype this forward of ``model`` on ``device`` runs the varlen kernel in (autocast's where autocast is on,
    else the weights'), or None where the kernel cannot run. Decided here, outside the (maybe compiled) layers."""
    on = torch.is_autocast_enabled(device.type)
    dtype = torch.get_autocast_dtype(device.type) if on else model.dtype
    head_dim = _head_dim(model)
    return dtype if head_dim is not None and _flash_kernel_runs(device, dtype, head_dim) else None


def _head_dim(model: PreTrainedModel) -> int | None:
    config = model.config.get_text_config()
    heads = getattr(config, "num_attention_heads", None)
    return getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)


@functools.cache
def _register() -> None:
    AttentionInterface.register(ATTENTION, padding_free_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # for the unpacked calls; packed calls ignore it


def check_supported(model: PreTrainedModel, max_length: int) -> None:
    """Raise PaddingFreeUnsupported, naming the reason, for a model that cannot run packed sequences of up to
    ``max_length`` tokens."""
    config = model.config.get_text_config()
    name = type(model).__name__
    if not getattr(model, "_supports_attention_backend", False):
        raise PaddingFreeUnsupported(f"{name} does not take a pluggable attention function")
    window = getattr(config, "sliding_window", None)
    if window is not None and window < max_length:  # a window as long as every sequence never cuts anything
        raise PaddingFreeUnsupported(
            f"{name} attends within a sliding window of {window} tokens, shorter than max_seq_length {max_length}"
        )
    other_layers = set(getattr(config, "layer_types", None) or []) - {"full_attention", "sliding_attention"}
    if other_layers:
        raise PaddingFreeUnsupported(f"{name} has attention layers packing cannot run: {sorted(other_layers)}")


def _use_packed_attention(model: PreTrainedModel, max_length: int) -> torch.nn.Module:
    """Switch ``model`` to the packed attention function; return its backbone (whose forward gets wrapped)."""
    check_supported(model, max_length)
    _register()
    model.set_attn_implementation(ATTENTION)
    return model.base_model


def enable_padding_free(model: PreTrainedModel, max_length: int) -> None:
    """Make every right-padded forward of ``model`` (sequences of at most ``max_length`` tokens) run packed."""
    backbone = _use_packed_attention(model, max_length)
    padded_forward = backbone.forward

    @functools.wraps(padded_forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        input_ids, attention_mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        layout = None if args else _packed_layout(input_ids, attention_mask, kwargs)
        if layout is None:
            return padded_forward(*args, **kwargs)
        rows, columns, cu_seq_lens, max_length = layout
        kwargs.update(
            input_ids=input_ids[rows, columns].unsqueeze(0),
            attention_mask=None,
            position_ids=columns.unsqueeze(0),  # a token's column is its position in its own sequence
            cu_seq_lens_q=cu_seq_lens,
            cu_seq_lens_k=cu_seq_lens,
            max_length_q=max_length,
            max_length_k=max_length,
            flash_varlen_dtype=_flash_varlen_dtype(backbone, input_ids.device),
        )
        outputs = padded_forward(**kwargs)
        packed = outputs.last_hidden_state[0]
        padded = packed.new_zeros(*attention_mask.shape, packed.size(-1))
        outputs.last_hidden_state = padded.index_put((rows, columns), packed)
        return outputs

    backbone.forward = forward


def enable_packed_attention(model: PreTrainedModel, max_length: int) -> None:
    """Make ``model`` attend within each sequence of batches that come packed already (TRL's SFT packing: one row,
    the sequence bounds in ``cu_seq_lens_q``), with FlashAttention's varlen kernel where it runs."""
    backbone = _use_packed_attention(model, max_length)
    packed_forward = backbone.forward

    @functools.wraps(packed_forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        input_ids = kwargs.get("input_ids")
        if kwargs.get("cu_seq_lens_q") is not None and input_ids is not None:
            kwargs.setdefault("flash_varlen_dtype", _flash_varlen_dtype(backbone, input_ids.device))
        return packed_forward(*args, **kwargs)

    backbone.forward = forward


def _packed_layout(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """For a training-style call (token ids, a 2-D right-padded mask, no cache, no positions of its own): each
    real token's (row, column) in the padded batch, the cumulative sequence lengths and the longest length.
    None for any other call. One device-to-host copy in all, so the GPU's queue is not drained more often."""
    if input_ids is None or attention_mask is None or attention_mask.dim() != 2:
        return None
    if kwargs.get("position_ids") is not None or kwargs.get("inputs_embeds") is not None:
        return None
    if kwargs.get("use_cache") or any(kwargs.get(k) is not None for k in ("cache", "past_key_values")):
        return None
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    positions = torch.arange(keep.size(1), device=keep.device)
    not_right_padded = ((positions.unsqueeze(0) < lengths.unsqueeze(1)) != keep).sum()
    shortest, longest, total, mismatches = torch.stack(
        [lengths.min(), lengths.max(), lengths.sum(), not_right_padded]
    ).tolist()
    if shortest == 0 or mismatches:
        return None
    rows = torch.repeat_interleave(torch.arange(keep.size(0), device=keep.device), lengths, output_size=total)
    cu_seq_lens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    columns = torch.arange(total, device=keep.device) - cu_seq_lens[rows]
    return rows, columns, cu_seq_lens, longest
