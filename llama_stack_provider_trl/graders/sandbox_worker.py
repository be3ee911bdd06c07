"""The python grader's worker process: ``python -I sandbox_worker.py LIMITS`` (it imports nothing of this
package). It leaves the network and the server's processes (namespaces, see _NAMESPACES), hides the server's own
directories, makes every mount but its working directory read-only, drops its capabilities, limits its address
space and CPU time, keeps its protocol pipes on private descriptors (the caller's prints go nowhere), ends with its
parent, loads the caller's source once, then grades batches: one JSON line in, one JSON line out per sample.

Its first line out: ``{"ready": true, "isolated": "network, processes, /proc, files" | ... | "nothing: <why>",
"load_error": ...}``.
"""

import ctypes
import json
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback

# Namespaces tried in order: the first that the OS allows is the sandbox (a user namespace: no capability over
# the host; a PID namespace: no other process visible or signalable, /proc its own; a network namespace: no
# network). Root without user namespaces falls back to a network namespace alone.
_NAMESPACES = (
    ("network, processes", os.CLONE_NEWUSER | os.CLONE_NEWNS | os.CLONE_NEWNET | os.CLONE_NEWPID),
    ("network", os.CLONE_NEWUSER | os.CLONE_NEWNET),
    ("network", os.CLONE_NEWNET),
)
_MS_REC, _MS_PRIVATE, _MS_BIND, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1 << 14, 1 << 18, 1 << 12, 2, 4, 8
_SYS_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _LINUX_CAPABILITY_VERSION_3 = 1, 38, 0x20080522


def _isolate(hidden: list[str]) -> str:
    """Enter the namespaces; with a PID namespace, fork: this process waits (and mirrors how the grading process
    ends) while the child, the namespace's first process, grades. Returns what is isolated, or why not."""
    unshare = getattr(os, "unshare", None)
    if unshare is None:
        return "nothing: this Python has no os.unshare"
    errors = []
    for isolated, flags in _NAMESPACES:
        try:
            unshare(flags)
        except OSError as exc:
            errors.append(str(exc))
            continue
        if flags & os.CLONE_NEWPID:
            _become_namespace_init()
            isolated += _own_mounts(hidden)
        return isolated
    return f"nothing: {'; '.join(errors)}"


def _become_namespace_init() -> None:
    child = os.fork()
    if child:  # no threads here: a process that left its PID namespace cannot start one
        server = os.getppid()
        while True:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                break
            if os.getppid() != server:
                os.killpg(0, signal.SIGKILL)
            time.sleep(0.5)
        if os.WIFSIGNALED(status):
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.waitstatus_to_exitcode(status))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # the waiting parent is killed: so is this
    # A namespace's first process ignores signals it has no handler for: the CPU limit's SIGXCPU needs one.
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(128 + signal.SIGXCPU))


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def _own_mounts(hidden: list[str]) -> str:
    """/proc of this PID namespace (or an empty one): the server's processes and their environments unseen. An
    empty directory over each of ``hidden`` (the server's jobs, job store and home). Every mount read-only but the
    working directory, then no capability left to undo it."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0 or (
        libc.mount(b"proc", b"/proc", b"proc", flags, None) != 0
        and libc.mount(b"none", b"/proc", b"tmpfs", flags, b"size=16k") != 0
    ):
        return f" (/proc shared: {os.strerror(ctypes.get_errno())})"
    isolated = ", /proc" + _hide(libc, hidden, flags)
    home = os.getcwd().encode()
    read_only, writable = _MountAttr(attr_set=_MOUNT_ATTR_RDONLY), _MountAttr(attr_clr=_MOUNT_ATTR_RDONLY)
    if (
        libc.mount(home, home, None, _MS_BIND | _MS_REC, None) == 0
        and libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(read_only), 32) == 0
        and libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, home, _AT_RECURSIVE, ctypes.byref(writable), 32) == 0
    ):
        os.chdir(home)  # the working directory, seen through its writable mount
        isolated += ", files"
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        return isolated + f" (capabilities kept: {os.strerror(ctypes.get_errno())})"
    return isolated


def _hide(libc: ctypes.CDLL, directories: list[str], flags: int) -> str:
    """An empty filesystem mounted over each directory, but one that holds this worker's working directory or its
    Python (it would not run on). Returns what could not be hidden, and why."""
    needed = [os.path.realpath(path) for path in (os.getcwd(), sys.prefix, sys.base_prefix, __file__)]
    for directory in directories:
        if not os.path.isdir(directory) or any(os.path.commonpath([directory, path]) == directory for path in needed):
            continue  # gone (or under one hidden already), or needed
        if libc.mount(b"none", directory.encode(), b"tmpfs", flags, b"size=4k,mode=0500") != 0:
            return f" ({directory} not hidden: {os.strerror(ctypes.get_errno())})"
    return ""


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
    isolated = _isolate(limits.get("hidden", []))
    if os.getpid() != 1:  # no PID namespace: this process watches its parent itself
        threading.Thread(target=_die_with_parent, args=(int(limits["parent"]),), daemon=True).start()
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
    answers.write(json.dumps({"ready": True, "isolated": isolated, "load_error": load_error}).encode() + b"\n")
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
