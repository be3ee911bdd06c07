"""A small real disk for tests of full-disk behaviour: a tmpfs of a given size (mounting needs root or
CAP_SYS_ADMIN; where that is refused the caller learns why and skips)."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_disk(mount_point: Path, size_bytes: int) -> Iterator[str | None]:
    """Mount a tmpfs of ``size_bytes`` at ``mount_point`` for the block; yield None, or why it could not be
    mounted (nothing is mounted then)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    size = f"size={size_bytes}"  # rounded up to whole pages
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        yield f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill_up(directory: Path) -> Path:
    """Write a file in ``directory`` until its disk is full; the file (delete it to free the disk again)."""
    filler = directory / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    return filler
