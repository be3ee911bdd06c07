"""The python grader's worker process: ``python -I sandbox_worker.py LIMITS`` (it imports nothing of this
package). It leaves the network (a new user and network namespace, or a network namespace as root), limits its
address space and CPU time, keeps its protocol pipes on private descriptors (the caller's prints go nowhere),
ends with its parent, loads the caller's source once, then grades batches: one JSON line in, one JSON line out
per sample.

Its first line out: ``{"ready": true, "network": "isolated" | "shared: <why>", "load_error": ...}``.
"""

import json
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback


def _leave_network() -> str:
    unshare = getattr(os, "unshare", None)
    if unshare is None:
        return "shared: this Python has no os.unshare"
    errors = []
    for flags in (os.CLONE_NEWUSER | os.CLONE_NEWNET, os.CLONE_NEWNET):
        try:
            unshare(flags)
            return "isolated"
        except OSError as exc:
            errors.append(str(exc))
    return f"shared: {'; '.join(errors)}"


def _die_with_parent(parent: int) -> None:
    """The worker, and whatever it started, ends once the process that started it is gone (killed or crashed):
    it is in a session of its own, so a signal to its parent's process group misses it."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)


def _cpu_limit(seconds: float, lifetime: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    resource.setrlimit(resource.RLIMIT_CPU, (min(lifetime, math.ceil(used + seconds)), lifetime))


def _reward(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"grade returned {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"grade returned {value}")
    return float(value)


def main() -> None:
    limits = json.loads(sys.argv[1])
    threading.Thread(target=_die_with_parent, args=(int(limits["parent"]),), daemon=True).start()
    network = _leave_network()
    memory = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    lifetime = int(limits["cpu_lifetime_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (lifetime, lifetime))
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    source = json.loads(requests.readline())["source"]
    namespace: dict = {"__name__": "grader"}
    load_error = None
    try:
        exec(compile(source, "grader.py", "exec"), namespace)
        if not callable(namespace.get("grade")):
            raise NameError("the source defines no function grade(sample, item)")
    except BaseException:
        load_error = traceback.format_exc(limit=-3)
    answers.write(json.dumps({"ready": True, "network": network, "load_error": load_error}).encode() + b"\n")
    answers.flush()
    for line in requests:
        for sample, item in json.loads(line)["batch"]:
            start = time.monotonic()
            _cpu_limit(float(limits["cpu_s"]), lifetime)
            try:
                if load_error:
                    raise RuntimeError(load_error)
                answer = {"reward": _reward(namespace["grade"](sample, item))}
            except BaseException as exc:  # the caller's code: any failure is its sample's error
                if isinstance(exc, RuntimeError) and load_error:
                    answer = {"error": load_error}
                else:
                    answer = {"error": traceback.format_exc(limit=-3)}
            answer["time"] = time.monotonic() - start
            answers.write(json.dumps(answer).encode() + b"\n")
            answers.flush()


if __name__ == "__main__":
    main()
