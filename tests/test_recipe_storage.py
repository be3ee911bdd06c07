"""The real recipe turns a failed save into a message that says why: not writable, or disk full."""

import errno
import json
from pathlib import Path

import pytest

from llama_stack_provider_trl.common.job_spec import EVENTS_FILE
from llama_stack_provider_trl.recipes import dpo_training_single_device as recipe

from job_fixtures import make_spec


def _failure(job_dir: Path) -> str:
    events = [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text().splitlines()]
    [failed] = [e for e in events if e["event"] == "failed"]
    return failed["error"]


def _spec(tmp_path: Path, tiny_model: Path):
    return make_spec(tmp_path, "job", model=str(tiny_model), max_steps_per_epoch=1)


def test_a_checkpoint_location_that_is_not_a_directory_fails_with_not_writable(
    tmp_path: Path, tiny_model: Path
) -> None:
    spec = _spec(tmp_path, tiny_model)
    (spec.path / "checkpoints").write_text("a file, not a directory")

    assert recipe.main(["recipe", spec.job_dir]) == 1
    assert _failure(spec.path) == (
        f"saving failed: cannot write {spec.path / 'checkpoints'}: the location is not writable (File exists)"
    )


def test_a_full_disk_while_saving_fails_with_disk_full(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real disk can be filled here without privileges; the recipe sees exactly what a full disk raises.
    def no_space(self, output_dir: str, **kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"{output_dir}/model.safetensors")

    monkeypatch.setattr(recipe.StepLimitedDPOTrainer, "save_model", no_space)
    spec = _spec(tmp_path, tiny_model)

    assert recipe.main(["recipe", spec.job_dir]) == 1
    assert "the disk is full (No space left on device)" in _failure(spec.path)
    # the first save is the end-of-epoch checkpoint
    assert f"cannot write {spec.path / 'checkpoints' / 'checkpoint-1'}/model.safetensors" in _failure(spec.path)


def test_unknown_arguments_are_refused(tmp_path: Path) -> None:
    assert recipe.main(["recipe", str(tmp_path), "--resume-please"]) == 2
