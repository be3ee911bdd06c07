"""Forward + backward of one chat-like preference batch, padded against padding-free (packed).

    python bench/padding_free_forward.py SHAPE [--bs B] [--seq L] [--reps R] [--grouped]

SHAPE is one of bench/workload.py's (tiny, qwen0.5b, qwen1.5b) or `small` (4 layers, 256 wide). The
batch holds 2*B sequences (chosen and rejected of B pairs, prompt + answer) whose parts are drawn like
the workload's --varlen rows (lognormal, median ~L/2, cap 2L); `--grouped` takes B pairs of similar
length, as length grouping would. Runs TRL's fused LM head on a random-init Qwen2 model, in bf16 autocast on
CUDA and fp32 on CPU, and prints the median seconds per forward + backward for each way, their ratio,
and the batch's padding share. Both ways compute the same log-probs (tests/test_padding_free.py).
"""

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from trl.trainer.utils import add_fused_lm_head
from workload import SHAPES  # bench/ is on the path of a script run from it

from llama_stack_provider_trl.recipes.padding_free import enable_padding_free

SMALL = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)


def batch(bs: int, seq: int, vocab: int, grouped: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen then rejected rows of ``bs`` pairs (prompt + answer each); grouped: ``bs`` neighbours in length
    order out of 64 batches' worth of pairs, as PairLengthGroupedSampler would put together."""
    rng = torch.Generator().manual_seed(0)

    def part() -> int:  # workload.preference_rows' varlen length
        return int(min(max(float(torch.empty(1).log_normal_(0.0, 0.8, generator=rng)) * seq / 2, 8), 2 * seq))

    pairs = [(part(), part(), part()) for _ in range(bs * (64 if grouped else 1))]
    if grouped:
        pairs.sort(key=lambda p: p[0] + max(p[1], p[2]))
        middle = len(pairs) // 2
        pairs = pairs[middle : middle + bs]
    lengths = [prompt + chosen for prompt, chosen, _ in pairs] + [prompt + rejected for prompt, _, rejected in pairs]
    input_ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=rng)
    mask = (torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    return input_ids.masked_fill(mask == 0, 0), mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=["tiny", "small", "qwen0.5b", "qwen1.5b"])
    ap.add_argument("--bs", type=int, default=8, help="preference pairs per batch")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--grouped", action="store_true", help="sort the batch's lengths, as length grouping does")
    a = ap.parse_args()

    shape = SMALL | {"vocab_size": 2048} if a.shape == "small" else SHAPES[a.shape]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    padded = Qwen2ForCausalLM(Qwen2Config(**shape, max_position_embeddings=8192)).to(device)
    packed = copy.deepcopy(padded)
    for model in (padded, packed):
        add_fused_lm_head(model)
    enable_padding_free(packed, max_length=8 * a.seq)
    input_ids, mask = (t.to(device) for t in batch(a.bs, a.seq, shape["vocab_size"], a.grouped))
    labels = input_ids.masked_fill(mask == 0, -100)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def step(model: Qwen2ForCausalLM) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            out = model(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(padded), step(packed)  # warm-up: kernels, allocator
    times: dict[str, list[float]] = {"padded": [], "packed": []}
    for _ in range(a.reps):  # alternate, so drift hits both
        times["padded"].append(step(padded))
        times["packed"].append(step(packed))
    medians = {name: statistics.median(values) for name, values in times.items()}
    padding = 1 - mask.sum().item() / mask.numel()
    print(
        f"{a.shape} on {torch.cuda.get_device_name() if cuda else 'cpu'}: {mask.size(0)} sequences, "
        f"{int(mask.sum())} real tokens, padding {padding:.0%}{' (grouped)' if a.grouped else ''}"
    )
    for name, seconds in medians.items():
        print(f"  {name:<7} {seconds * 1000:8.1f} ms per forward+backward, {mask.sum().item() / seconds:9.0f} tokens/s")
    print(f"packed/padded speed-up: {medians['padded'] / medians['packed']:.2f}x")


if __name__ == "__main__":
    main()
