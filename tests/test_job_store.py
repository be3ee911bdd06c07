"""The sqlite job store: one row per job, upserted, read back in submission order."""

from pathlib import Path

from llama_stack_provider_trl.engine.job_store import JobStore


def test_store_upserts_and_keeps_submission_order(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    for name in ("b", "a", "c"):
        store.save(name, "scheduled", f'{{"name": "{name}", "v": 1}}')
    store.save("b", "completed", '{"name": "b", "v": 2}')
    store.close()

    reopened = JobStore(tmp_path / "jobs.db")
    assert reopened.load_all() == ['{"name": "b", "v": 2}', '{"name": "a", "v": 1}', '{"name": "c", "v": 1}']
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
