"""``accelerate launch`` for a job of several processes, as the server starts it:

    python -m llama_stack_provider_trl.recipes.accelerate_launch <accelerate_config> <recipe> <job_dir> [--resume]

It runs accelerate's own launch command in this process (torchrun's agent, which starts the ranks and stops them
all when one fails) and adds what a job needs around it: this launcher dies with the server, every rank dies with
this launcher (each rank's parent-death check watches it), and when a rank fails the job's event stream says which
one (rank 0 alone writes events, and reports its own errors).
"""

import os
import socket
import sys
from pathlib import Path

from accelerate.commands.launch import launch_command, launch_command_parser
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.common.parent_watch import PARENT_PID_ENV, die_with_parent
from llama_stack_provider_trl.recipes.ranks import events_size, launcher_arguments, report_rank_failure

# How often torchrun's agent looks at its ranks: a dead rank ends the others this soon
MONITOR_INTERVAL_S = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cause(failure: ChildFailedError) -> tuple[int, str]:
    """(rank, what happened to it) of the rank that brought the job down. A rank killed by a signal other than the
    agent's SIGTERM went first: the others then fail in their collectives (gloo: connection closed by peer)."""
    killed = {
        rank: f.signal_name()
        for rank, f in failure.failures.items()
        if f.exitcode < 0 and f.signal_name() not in ("SIGTERM", "<N/A>")
    }
    if killed:
        rank = min(killed)
        how = f"was killed by signal {killed[rank]}"
    else:
        rank, first = failure.get_first_failure()
        how = f"exited with code {first.exitcode}"
    pid = failure.failures[rank].pid
    others = ", ".join(str(r) for r in sorted(set(failure.failures) - {rank}))
    return rank, f"rank {rank} (pid {pid}) {how}" + (f"; rank(s) {others} stopped with it" if others else "")


def main(argv: list[str]) -> int:
    die_with_parent()
    arguments = launcher_arguments(argv, "ACCELERATE_CONFIG")
    if arguments is None:
        return 2
    config_file, recipe_module, job_dir, recipe_args = arguments
    os.environ[PARENT_PID_ENV] = str(os.getpid())  # the ranks are this process's children
    args = launch_command_parser().parse_args(
        [
            "--config_file",
            config_file,
            "--main_process_port",
            str(_free_port()),
            "--monitor_interval",
            str(MONITOR_INTERVAL_S),
            "--module",
            recipe_module,
            job_dir,
            *recipe_args,
        ]
    )
    events_path = Path(job_dir) / EVENTS_FILE
    events_before = events_size(events_path)
    try:
        launch_command(args)
    except ChildFailedError as exc:
        report_rank_failure(events_path, events_before, *_cause(exc))
        return 1
    except SignalException as exc:  # the server stopped the job: torchrun has stopped the ranks
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
