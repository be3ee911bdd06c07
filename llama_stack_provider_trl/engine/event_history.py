"""Jobs' events as the server shows them (OGX's events list and result file, curves.png), each file read once.

A job's ``events.jsonl`` only grows while its process runs; the server keeps what it has parsed of each and its byte
offset, so a later read parses only the lines added since. A file rewritten shorter than what was read is read again
from the start. The most recently read jobs are kept; one read again after it was let go is parsed once more.
"""

import collections
import threading
from pathlib import Path

from llama_stack_provider_trl.common.events import EventReader, JobEvent
from llama_stack_provider_trl.common.job_spec import EVENTS_FILE

KEPT_JOBS = 64


class _Parsed:
    def __init__(self, job_dir: Path) -> None:
        self.reader = EventReader(job_dir / EVENTS_FILE, job=job_dir.name)
        self.events: list[JobEvent] = []


class EventHistory:
    def __init__(self, kept_jobs: int = KEPT_JOBS) -> None:
        self._kept = kept_jobs
        self._jobs: collections.OrderedDict[Path, _Parsed] = collections.OrderedDict()
        self._lock = threading.Lock()

    def events(self, job_dir: Path) -> list[JobEvent]:
        """Every event of the job in ``job_dir`` so far, oldest first."""
        with self._lock:
            parsed = self._jobs.pop(job_dir, None) or _Parsed(job_dir)
            self._jobs[job_dir] = parsed
            while len(self._jobs) > self._kept:
                self._jobs.popitem(last=False)
            rewinds = parsed.reader.rewinds
            new = parsed.reader.read_new()
            if parsed.reader.rewinds != rewinds:  # the file was rewritten: what it holds now is all there is
                parsed.events = []
            parsed.events.extend(new)
            return list(parsed.events)
