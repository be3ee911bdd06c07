"""Length-grouped batches of preference pairs: less padding, still random.

Each epoch: shuffle the rows, cut them into megabatches of ``megabatch_batches`` batches, sort each
megabatch by pair length and cut it into batches, then shuffle the order of the batches. A pair costs
its longer side (chosen and rejected are padded together). Unlike transformers' LengthGroupedSampler,
whose megabatches shrink to a few batches on small datasets, this sorts up to 64 batches at a time.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class PairLengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], batch_size: int, seed: int, megabatch_batches: int = 64) -> None:
        self._lengths = lengths
        self._batch_size = batch_size
        self._megabatch = batch_size * megabatch_batches
        self._seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self._seed + self._epoch)
        self._epoch += 1
        order = torch.randperm(len(self._lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self._megabatch):
            megabatch = sorted(order[start : start + self._megabatch], key=self._lengths.__getitem__, reverse=True)
            batches += [megabatch[i : i + self._batch_size] for i in range(0, len(megabatch), self._batch_size)]
        # Only the very last batch may be short, or the DataLoader's batch boundaries would shift.
        short = [batches.pop()] if batches and len(batches[-1]) < self._batch_size else []
        for index in torch.randperm(len(batches), generator=generator).tolist() + [len(batches)] * len(short):
            yield from (batches + short)[index]


def pair_lengths(tokenized_rows: object) -> list[int]:
    """Tokens a preference pair occupies in a batch, from TRL's tokenized dataset."""
    return [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in tokenized_rows]
