"""curves.png, drawn from a job's events: the panels a job's metrics call for, redrawn off the job watcher."""

import math
from pathlib import Path

import pytest
from PIL import Image

from llama_stack_provider_trl.algorithms import ALGORITHMS
from llama_stack_provider_trl.common import events as events_module
from llama_stack_provider_trl.common.events import EpochEnd, Evaluation, EventWriter, Metrics, SetupDone
from llama_stack_provider_trl.common.job_spec import CURVES_FILE, EVENTS_FILE
from llama_stack_provider_trl.engine.curves import CurvesPainter, draw_curves

from job_fixtures import poll


def write_events(job_dir: Path, steps: int, metrics_at: dict[str, float], eval_keys: tuple[str, ...] = ()) -> None:
    """A job's events as a recipe writes them: setup, one Metrics per step, an epoch end and evaluation halfway."""
    job_dir.mkdir(exist_ok=True)
    events = EventWriter(job_dir / EVENTS_FILE)
    events.emit(SetupDone(total_steps=steps, steps_per_epoch=steps // 2))
    for step in range(1, steps + 1):
        metrics = {key: value * (1 + 0.2 * math.sin(step)) for key, value in metrics_at.items()}
        events.emit(Metrics(step=step, total_steps=steps, epoch=1 + step * 2 // (steps + 1), metrics=metrics))
        if step in (steps // 2, steps):
            events.emit(EpochEnd(epoch=step * 2 // steps, step=step))
            if eval_keys:
                events.emit(Evaluation(epoch=step * 2 // steps, step=step, metrics=dict.fromkeys(eval_keys, 0.5)))
    events.close()


def test_a_dpo_job_is_drawn_with_its_loss_margin_accuracy_lr_throughput_and_validation(tmp_path: Path) -> None:
    metrics = {"loss": 0.69, "rewards/margins": 0.1, "rewards/accuracies": 0.6, "learning_rate": 1e-5, "grad_norm": 2.0}
    write_events(tmp_path, 60, metrics, eval_keys=("eval_loss", "eval_rewards/margins"))

    path = draw_curves(tmp_path, "job-1: completed, step 60/60 (tiny)", ALGORITHMS["dpo"].metrics.panels)

    assert path == tmp_path / CURVES_FILE
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == (1560, 790)
        assert picture.text["panels"] == "Loss, Reward margin, Preference accuracy, Learning rate, Gradient norm"
        assert picture.text["validation"] == "eval_loss, eval_rewards/margins"
    assert not list(tmp_path.glob(".*partial"))


def test_an_sft_job_gets_token_accuracy_and_no_reward_panels(tmp_path: Path) -> None:
    write_events(tmp_path, 8, {"loss": 2.0, "mean_token_accuracy": 0.4}, eval_keys=("eval_loss",))

    with Image.open(draw_curves(tmp_path, "sft", ALGORITHMS["sft"].metrics.panels)) as picture:
        assert picture.text["panels"] == "Loss, Token accuracy"


def test_a_reinforcement_job_gets_its_reward_with_spread_and_validation_beside_the_loss(tmp_path: Path) -> None:
    write_events(tmp_path, 8, {"loss": 0.01, "reward": 0.4, "reward_std": 0.3}, eval_keys=("eval_reward",))

    with Image.open(draw_curves(tmp_path, "rft", ALGORITHMS["grpo"].metrics.panels)) as picture:
        assert picture.text["panels"] == "Loss, Reward"
        assert picture.text["validation"] == "eval_reward"


def test_a_job_with_nothing_logged_yet_has_no_picture(tmp_path: Path) -> None:
    assert draw_curves(tmp_path, "queued") is None
    assert not (tmp_path / CURVES_FILE).exists()


def test_the_painter_survives_a_job_whose_picture_cannot_be_written_and_draws_the_next(tmp_path: Path) -> None:
    broken, fine = tmp_path / "broken", tmp_path / "fine"
    write_events(broken, 4, {"loss": 1.0})
    write_events(fine, 4, {"loss": 1.0})
    (broken / CURVES_FILE).mkdir()  # a directory where the picture should go: the move onto it fails

    painter = CurvesPainter()
    painter.request(broken, "broken")
    painter.request(fine, "fine")
    painter.close(timeout_s=60)

    assert (fine / CURVES_FILE).is_file() and (broken / CURVES_FILE).is_dir()
    assert not list(broken.glob(".*partial"))


def test_the_painter_redrawing_a_growing_job_parses_each_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes | str] = []
    parse = events_module.parse_event
    monkeypatch.setattr(events_module, "parse_event", lambda line: parsed.append(line) or parse(line))
    job_dir = tmp_path / "growing"
    write_events(job_dir, 6, {"loss": 1.0})
    painter = CurvesPainter()
    painter.request(job_dir, "epoch 1")
    poll(lambda: (job_dir / CURVES_FILE).is_file(), what="the first picture")
    writer = EventWriter(job_dir / EVENTS_FILE)
    for step in range(7, 13):  # the next epoch
        writer.emit(Metrics(step=step, total_steps=12, epoch=2, metrics={"loss": 1.0 / step}))
    writer.close()

    painter.request(job_dir, "epoch 2")
    painter.close(timeout_s=60)

    lines = (job_dir / EVENTS_FILE).read_bytes().splitlines()
    assert sorted(parsed) == sorted(lines)  # every line once, though the picture was drawn twice
