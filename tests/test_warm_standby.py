"""Jobs handed to a training process started ahead (warm_standby) behind a real server, with real TRL; the
server's operator set OMP_NUM_THREADS, which its jobs keep.

The supervisor's side (hand-over, a standby that dies, shutdown, a stray after a crash) is covered with the
fake recipe in test_job_manager.py; this is the real recipe's side of the hand-over.
"""

from pathlib import Path

from llama_stack_provider_trl.demo.requests import dpo_request

from helpers import register_rows, unique, wait_final
from job_fixtures import client_for, server_for


def test_jobs_run_in_standby_processes_and_write_their_own_logs(
    tmp_path: Path, tiny_model: Path, preference_rows: list[dict[str, str]]
) -> None:
    # The operator chose one CPU thread per job (the server's own share would be all the cores of one job)
    with server_for(tmp_path / "home", env={"OMP_NUM_THREADS": "1"}, warm_standby=True) as server:
        client = client_for(server)
        dataset_id = register_rows(client, preference_rows[:8])
        runs = {}
        for name, model in (("first", tiny_model), ("second", tiny_model), ("broken", "no-such-org/no-such-model")):
            job_uuid = unique(name)
            client.alpha.post_training.preference_optimize(
                **dpo_request(job_uuid, model, dataset_id, max_steps_per_epoch=2)
            )
            runs[name] = wait_final(client, job_uuid)

    for name in ("first", "second"):  # one standby per job: the next is started when a job takes one
        resources = runs[name].resources_allocated
        assert runs[name].status == "completed", resources["error"]
        assert resources["warm_start"] is True and resources["attempts"] == 1
        log = Path(resources["log_path"]).read_text()
        assert "'loss'" in log  # Trainer's output went to the job's log
        assert resources["cpu_threads"] == 1 and "training on cpu with 1 CPU thread (OMP_NUM_THREADS=1)" in log
    broken = runs["broken"].resources_allocated
    assert runs["broken"].status == "failed" and broken["warm_start"] is True
    assert "no-such-org/no-such-model" in broken["error"] and "Traceback" in Path(broken["log_path"]).read_text()
