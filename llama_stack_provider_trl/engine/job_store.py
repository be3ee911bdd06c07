"""Durable job records: one sqlite row per job, written in its own transaction on every change.

Each row holds the job's record as JSON plus the columns the server queries: status and the order the
job was submitted in (``seq``, assigned once on first insert and kept by every later upsert), so a queue
rebuilt after a restart keeps submission order. WAL mode: a reader never blocks the writer, and a
committed change survives a crash of the process that made it.

A server opens its store ``exclusive``: it holds an flock on ``<store>.lock`` (which records its pid) until it
closes the store or dies, so a second server on the same state cannot start, recover the first one's running jobs
as interrupted, or launch the same queued jobs.
"""

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import BinaryIO

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_uuid TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""


class StoreInUse(RuntimeError):
    """Another live process holds the store's lock."""


class JobStore:
    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(self.path) if exclusive else None
        # One connection shared by the provider's threads; the lock serialises its use.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a crash of this process
            self._db.executescript(_SCHEMA)

    def save(self, job_uuid: str, status: str, record_json: str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO jobs (job_uuid, status, record, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job_uuid) DO UPDATE SET status = excluded.status, record = excluded.record, "
                "updated_at = excluded.updated_at",
                (job_uuid, status, record_json, time.time()),
            )

    def load_all(self) -> list[str]:
        """Every record's JSON, in submission order."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT record FROM jobs ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None


def _lock(store: Path) -> BinaryIO:
    """Hold ``<store>.lock`` for this process (released when it is closed, or the process dies), writing our pid
    in it; StoreInUse naming the holder's pid if another process has it."""
    path = store.with_name(store.name + ".lock")
    lock_file = path.open("a+b")  # not truncated: the holder's pid stays readable until we hold the lock
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().decode(errors="replace").strip() or "unknown"
        lock_file.close()
        raise StoreInUse(
            f"another server (pid {holder}) is using the job store {store} (its lock {path} is held); stop that "
            "server first, or give this one its own job_store_path and output_dir"
        ) from None
    with contextlib.suppress(OSError):
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n".encode())
        lock_file.flush()
    return lock_file
