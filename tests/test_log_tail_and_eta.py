"""Status's `logs`/`log_lines` (the end of a growing log, numbered) and `estimated_finish` (from the step rate)."""

from datetime import UTC, datetime
from pathlib import Path

from llama_stack_provider_trl.common.events import Metrics, Started, TrainingStarted
from llama_stack_provider_trl.engine.job_record import JobRecord, apply_event
from llama_stack_provider_trl.engine.log_tail import MAX_LINE_CHARS, TAIL_BYTES, LogTail

from job_fixtures import make_spec


def test_a_line_still_being_written_waits_for_its_newline_and_lines_are_counted_as_the_log_grows(
    tmp_path: Path,
) -> None:
    log, tail = tmp_path / "train.log", LogTail()
    assert tail.read(log, 5) == ([], 0)
    log.write_text("one\ntwo\nthr")

    assert tail.read(log, 5) == (["one", "two"], 2)
    assert tail.read(log, 5, partial=True) == (["one", "two", "thr"], 3)  # its writer is gone: show it

    with log.open("a") as f:
        f.write("ee\n" + "".join(f"line {i}\n" for i in range(100)))
    assert tail.read(log, 3) == (["line 97", "line 98", "line 99"], 103)


def test_a_long_log_is_read_from_its_end_and_long_lines_are_cut(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("x" * (3 * TAIL_BYTES) + "\nloading 10%\rloading 100%\nlast\n")

    lines, count = LogTail().read(log, 5)

    assert lines == ["loading 100%", "last"] and count == 3  # the 192 KiB line began before the window
    log.write_text("y" * (2 * MAX_LINE_CHARS) + "\n")
    [line], _ = LogTail().read(log, 5)
    assert len(line) == MAX_LINE_CHARS and line.endswith("…")


def test_estimated_finish_is_the_remaining_steps_at_the_rate_since_training_began(tmp_path: Path) -> None:
    record = apply_event(JobRecord(spec=make_spec(tmp_path, "job")), Started(time=0.0))
    record = apply_event(record, Metrics(time=50.0, step=0, total_steps=10, epoch=1, metrics={}))
    assert record.estimated_finish is None  # still loading: no rate yet
    record = apply_event(record, TrainingStarted(time=100.0, optimizer="AdamW", step=2))  # resumed at step 2

    record = apply_event(record, Metrics(time=110.0, step=4, total_steps=10, epoch=1, metrics={}))

    assert record.estimated_finish == datetime.fromtimestamp(110.0 + 6 * 5.0, UTC)  # 5 s per step, 6 to go
    relaunched = apply_event(record, Started(time=500.0))  # a resumed job's new process: measured afresh
    assert relaunched.estimated_finish is None and relaunched.rate_since is None
