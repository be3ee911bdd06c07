"""The last lines of a job's log, and how many lines it has, without reading a long log again on every status."""

import threading
from pathlib import Path
from typing import BinaryIO

TAIL_BYTES = 64 * 1024  # the window read from the end: enough for the last lines of any sane log
MAX_LINE_CHARS = 500  # a longer line (a dumped tensor, a progress bar redrawn with \r) is cut, with a mark


class LogTail:
    """Reads the end of growing log files. Line counts are kept per file and advanced over the new bytes only, so
    a client following a log (`llama-stack-trl logs -f`) can tell by number which lines it has printed."""

    def __init__(self) -> None:
        self._counted: dict[Path, tuple[int, int]] = {}  # path -> (bytes counted, newlines in them)
        self._lock = threading.Lock()

    def read(self, path: Path, max_lines: int, partial: bool = False) -> tuple[list[str], int]:
        """The last ``max_lines`` lines of ``path`` and how many lines it has ([], 0 when there is no file yet).
        A last line without its newline is still being written: it is left for a later read, unless ``partial``
        (the writer is gone)."""
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                with self._lock:
                    counted, newlines = self._counted.get(path, (0, 0))
                    if counted > size:  # the file was replaced or truncated: count again
                        counted, newlines = 0, 0
                    f.seek(counted)
                    while counted < size and (chunk := f.read(min(1 << 20, size - counted))):
                        newlines += chunk.count(b"\n")
                        counted += len(chunk)
                    self._counted[path] = (counted, newlines)
                lines, unfinished = _last_lines(f, size, max_lines, partial)
        except OSError:
            return [], 0
        return lines, newlines + unfinished


def tail_lines(path: Path, max_lines: int) -> list[str]:
    """The last lines of a finished process's log (for an error message)."""
    try:
        with path.open("rb") as f:
            return _last_lines(f, f.seek(0, 2), max_lines, partial=True)[0]
    except OSError as exc:
        return [f"(log unreadable: {exc})"]


def _last_lines(f: BinaryIO, size: int, max_lines: int, partial: bool) -> tuple[list[str], int]:
    """The last lines within the file's first ``size`` bytes, and 1 if an unfinished last line is among them."""
    start = max(size - TAIL_BYTES, 0)
    f.seek(start)
    pieces = f.read(size - start).split(b"\n")
    last = pieces.pop()  # what follows the last newline: nothing, or a line still being written
    unfinished = int(partial and bool(last))
    if unfinished:
        pieces.append(last)
    if start > 0 and pieces:
        pieces = pieces[1:]  # the window began inside a line
    return [_clip(piece.decode("utf-8", errors="replace")) for piece in pieces[-max_lines:]], unfinished


def _clip(line: str) -> str:
    line = line.rstrip("\r").rsplit("\r", 1)[-1]  # what a terminal shows of a line redrawn with \r
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"
