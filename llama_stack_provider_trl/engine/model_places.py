"""Where a caller's job may read a local model's files from, and the one answer for any other place.

Inside the output directory: the caller's own jobs only. Outside it: the server's allowed_model_dirs (anywhere when
unset), but never another job's directory (one of the other front door's server, or of an earlier output
directory: its checkpoints are its owner's, reached by identifier on the server that ran it). Every file of the model
directory is resolved, so a weight file symlinked out of an allowed directory is refused like the directory itself.
A refusal is one answer whether the path is missing, elsewhere or no model, so a request cannot probe what exists on
the server; what is wrong in detail is said only in the caller's own jobs and in the directories the operator lists.
"""

import os
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Protocol

from llama_stack_provider_trl.common.job_spec import JOB_SPEC_FILE
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given

MAX_MODEL_FILES = 10_000  # entries of a model directory's tree checked; save_pretrained writes a few dozen


class Caller(Protocol):
    may_read_job: Callable[[str], bool]  # whether the caller may read the job of this job_uuid


class ModelPlaces:
    def __init__(self, config: TrlPostTrainingConfig, output_root: Path, caller: Caller) -> None:
        listed = config.allowed_model_dirs
        self.listed = listed
        self.allowed = None if listed is None else [Path(os.path.realpath(Path(d).expanduser())) for d in listed]
        self.output_root = output_root
        self.caller = caller

    def own_job(self, real: Path) -> bool:
        if not real.is_relative_to(self.output_root):
            return False
        job = real.relative_to(self.output_root).parts[:1]
        return bool(job) and self.caller.may_read_job(job[0])

    def may_read(self, real: Path) -> bool:
        if real.is_relative_to(self.output_root):
            return self.own_job(real)
        if any((directory / JOB_SPEC_FILE).is_file() for directory in (real, *real.parents)):
            return False
        return self.allowed is None or any(real.is_relative_to(allowed) for allowed in self.allowed)

    def may_tell(self, real: Path) -> bool:
        """Whether an answer may say what is wrong at ``real`` (missing, no config.json, ...)."""
        return self.own_job(real) or (self.allowed is not None and self.may_read(real))

    def check_files(self, model: Given[str], directory: Path) -> None:
        """Every entry of the model directory's tree resolves to a place the caller may read."""
        seen: set[str] = set()  # real directories walked: a symlink loop is walked once
        checked = 0
        for root, names, files in os.walk(directory, followlinks=True):
            seen.add(os.path.realpath(root))
            for name in (*names, *files):
                path = Path(root) / name
                if path.is_symlink() and not self.may_read(Path(os.path.realpath(path))):
                    raise self.refusal(model)
            checked += len(names) + len(files)
            if checked > MAX_MODEL_FILES:
                raise RequestError(
                    model.field, f"'{model.value}' holds over {MAX_MODEL_FILES} files; give a model directory"
                )
            names[:] = [name for name in names if os.path.realpath(Path(root) / name) not in seen]

    def refusal(self, model: Given[str]) -> RequestError:
        return self._forbidden(model, "is not a model directory this server trains from (symlinks resolved)")

    def hub_refusal(self, model: Given[str]) -> RequestError:
        return self._forbidden(
            model, "is a Hugging Face Hub id, and this server trains no Hub models (hub_models: false)"
        )

    def _forbidden(self, model: Given[str], problem: str) -> RequestError:
        where = f"inside allowed_model_dirs ({', '.join(self.listed)})" if self.listed is not None else "on this server"
        return RequestError(
            model.field,
            f"'{model.value}' {problem}; give a model directory save_pretrained wrote {where}, or one of your jobs' "
            "checkpoints",
            HTTPStatus.FORBIDDEN,
        )
