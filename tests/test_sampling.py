import random

from llama_stack_provider_trl.recipes.sampling import PairLengthGroupedSampler


def _padded(order: list[int], lengths: list[int], batch: int) -> int:
    return sum(batch * max(lengths[i] for i in order[k : k + batch]) for k in range(0, len(order), batch))


def test_grouped_batches_cover_every_row_once_with_less_padding_and_new_order_each_epoch() -> None:
    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(4, 0.8)) + 1 for _ in range(203)]  # 203: the last batch is short
    sampler = PairLengthGroupedSampler(lengths, batch_size=8, seed=1)

    first, second = list(sampler), list(sampler)

    assert sorted(first) == list(range(203)) and sorted(second) == list(range(203))
    assert first != second
    shuffled = rng.sample(range(203), 203)
    assert _padded(first, lengths, 8) < 0.8 * _padded(shuffled, lengths, 8)
    # the short batch comes last, so every other batch the DataLoader cuts is a whole sorted group
    batches = [first[k : k + 8] for k in range(0, 203, 8)]
    assert len(batches[-1]) == 3
    assert all(sorted(b, key=lengths.__getitem__, reverse=True) == b for b in batches[:-1])
