"""Append-only JSON-lines channel from a training process to the server that watches it.

The recipe appends one line per event; the server reads the lines added since its last read.
A line is only consumed once its newline is there, so a half-written line is never parsed.
"""

import json
import time
from pathlib import Path
from typing import Any


class EventWriter:
    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventReader:
    def __init__(self, path: Path, offset: int = 0) -> None:
        self._path = path
        self._offset = offset  # bytes already read (or to skip)

    @property
    def offset(self) -> int:
        return self._offset

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        complete, _, _ = chunk.rpartition(b"\n")
        if not complete:
            return []
        self._offset += len(complete) + 1
        return [json.loads(line) for line in complete.split(b"\n") if line.strip()]
