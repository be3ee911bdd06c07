"""What the launchers of a job's several ranks (accelerate_launch.py, ray_launch.py) share."""

import sys
from pathlib import Path

from llama_stack_provider_trl.common.events import EventReader, EventWriter, Failed

# A rank waits this long in a collective for the others before it fails; the launchers end a job whose rank died
# much sooner, so this only bounds a rank that hangs while alive.
PROCESS_GROUP_TIMEOUT_S = 600


def events_size(events_path: Path) -> int:
    """Where the events of this launch begin (a resumed job appends to its earlier run's)."""
    return events_path.stat().st_size if events_path.exists() else 0


def report_rank_failure(events_path: Path, events_before: int, rank: int | None, cause: str) -> None:
    """Say in the job's events which rank failed the job and how. Rank 0, the one rank that writes events, may have
    reported its own error already: that one stands. Another rank's failure is the cause even if rank 0 then
    failed too (its collectives lose their peer)."""
    reported = EventReader(events_path, offset=events_before).read_new()
    if rank == 0 and any(isinstance(event, Failed) for event in reported):
        return
    writer = EventWriter(events_path)
    writer.emit(Failed(error=cause))
    writer.close()


def launcher_arguments(argv: list[str], first: str) -> tuple[str, str, str, list[str]] | None:
    """(first, recipe module, job dir, recipe arguments) from a launcher's command line; None after printing usage."""
    if len(argv) < 4:
        print(f"usage: {argv[0]} {first} RECIPE_MODULE JOB_DIR [ARGS...]", file=sys.stderr)
        return None
    return argv[1], argv[2], argv[3], argv[4:]
