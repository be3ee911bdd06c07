"""Server start time: seconds from `llama stack run run.yaml` to a healthy server, with this provider loaded.

    PYTHONPATH=$PWD python bench/start_time.py [RUNS]

Run from the repository root of the checkout to measure (PYTHONPATH makes the server import that checkout's
package). Each run starts a fresh server with its own empty stores on the CPU and stops it once healthy.
"""

import sys
import tempfile
import time
from pathlib import Path

from llama_stack_provider_trl.demo.stack_server import StackServer


def main(runs: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="start-time-"))
    times = []
    for run in range(runs):
        env = {"HOME": str(home), "TRL_OUTPUT_DIR": str(home / "jobs"), "TRL_DEVICE": "cpu"}
        server = StackServer(
            Path("run.yaml"), home / "server.log", env=env | {"SQLITE_STORE_DIR": str(home / f"db{run}")}
        )
        started = time.monotonic()
        server.start()
        times.append(time.monotonic() - started)
        server.stop()
    print("start-to-healthy s:", [round(t, 2) for t in times])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
