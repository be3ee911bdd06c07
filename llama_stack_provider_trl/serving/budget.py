"""Which models the generation process keeps loaded: a memory budget, the least recently used out first.

Sizes start as the model's weight files on disk and become what the generation process measured once it loaded the
model (its parameters and buffers, adapters included). Adapters count with their base: unloading the base unloads
them.
"""

from collections import OrderedDict
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weight_bytes(directory: str) -> int:
    """The size of a model directory's weight files (safetensors, or .bin where there are none)."""
    root = Path(directory)
    for suffix in WEIGHT_SUFFIXES:
        sizes = [path.stat().st_size for path in root.glob(f"*{suffix}") if path.is_file()]
        if sizes:
            return sum(sizes)
    return 0


class MemoryBudget:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.loaded: OrderedDict[str, int] = OrderedDict()  # base directory -> bytes, least recently used first

    def use(self, base: str, estimate: int) -> list[str]:
        """Mark ``base`` used now (loading it with ``estimate`` bytes if it is not loaded); return the bases to
        unload first so that it fits."""
        if base in self.loaded:
            self.loaded.move_to_end(base)
            return []
        evicted = []
        while self.loaded and sum(self.loaded.values()) + estimate > self.budget_bytes:
            old, _ = self.loaded.popitem(last=False)
            evicted.append(old)
        self.loaded[base] = estimate
        return evicted

    def measured(self, base: str, size: int) -> None:
        if base in self.loaded:
            self.loaded[base] = size

    def forget(self, base: str) -> None:
        self.loaded.pop(base, None)
