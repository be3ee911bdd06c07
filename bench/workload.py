"""The benchmark's workload: a random-init model of a real shape, a word-level tokenizer and preference rows.

Weights do not change FLOPs, so a random-init model of Qwen2.5's shapes (tiny, qwen0.5b, qwen1.5b) measures what
the trained one would; a word-level tokenizer makes token counts exact; rows are prompt/chosen/rejected strings of
random words, equal length or chat-like (``varlen``: lognormal, median ~seq/2, cap 2*seq). The generator and seed
are the shared anchor's (../shared/bench/trl_dpo_anchor.py), so where that file is present its numbers compare
with these (dpo_bench.py's optional `anchor` arm).
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    | {"vocab_size": 2048},
    "qwen0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    )
    | {"vocab_size": 151936},
    "qwen1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    )
    | {"vocab_size": 151936},
}
WORDS = 1000


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def text(rng: torch.Generator, words: int) -> str:
    return " ".join(f"w{int(x)}" for x in torch.randint(0, WORDS, (words,), generator=rng))


def preference_rows(count: int, seq: int, varlen: bool) -> list[dict[str, str]]:
    rng = torch.Generator().manual_seed(0)

    def length() -> int:
        if not varlen:
            return seq
        x = float(torch.empty(1).log_normal_(mean=0.0, std=0.8, generator=rng)) * seq / 2
        return int(min(max(x, 8), 2 * seq))

    return [
        {"prompt": text(rng, length()), "chosen": text(rng, length()), "rejected": text(rng, length())}
        for _ in range(count)
    ]


def save_model(shape: str, model_dir: Path) -> None:
    """The shape's model (bf16) and the tokenizer, saved once. Llama layers in the Qwen2 shape: the same matmuls
    (Qwen2 adds q/k/v biases), and unlike a qwen2 config a llama config lets AutoTokenizer load the word-level
    tokenizer as saved (transformers 5 forces Qwen2Tokenizer onto qwen2 models, which cannot read it)."""
    if (model_dir / "config.json").is_file():
        return
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)
    tokenizer().save_pretrained(model_dir)
