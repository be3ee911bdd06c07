"""Make a training process die with the server that started it, so it never holds a device as an orphan.

Linux: PR_SET_PDEATHSIG delivers SIGKILL when the parent thread that forked us exits (the server's job
watcher thread, which outlives every job it launches). Everywhere: a watchdog thread exits the process
once its parent pid changes. The expected parent pid comes in the environment, so a parent that died
before we got here is noticed too.
"""

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

PARENT_PID_ENV = "TRL_PROVIDER_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(poll_s: float = 1.0) -> None:
    """No-op unless the server launched this process (the variable is set)."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected:
        return
    parent = int(expected)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        _die()
    threading.Thread(target=_watch, args=(parent, poll_s), name="parent-watchdog", daemon=True).start()


def _watch(parent: int, poll_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    _die()


def _die() -> None:
    print("the server that started this job is gone; exiting", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
