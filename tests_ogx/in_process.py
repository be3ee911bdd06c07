"""The OGX front door in the test's own process, over uploaded files held in memory: for what a real server cannot
show without timing (refusals, and what runs while a request is read)."""

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi.exceptions import RequestValidationError
from ogx_api import ResourceNotFoundError
from pydantic import ValidationError

from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.ogx.api import CreateFineTuningJobRequest, error_response
from llama_stack_provider_trl.ogx.fine_tuning import TrlFineTuningImpl


def jsonl(lines: list[Any] | str) -> str:
    if isinstance(lines, str):
        return lines
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


class MemoryFiles:
    """The part of OGX's Files API the front door reads: uploaded files kept in memory."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}

    def upload(self, lines: list[Any] | str, purpose: str = "fine-tune") -> str:
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = (jsonl(lines).encode(), purpose)
        return file_id

    def _file(self, file_id: str) -> tuple[bytes, str]:
        if file_id not in self.files:
            raise ResourceNotFoundError(file_id, "File")
        return self.files[file_id]

    async def openai_retrieve_file(self, request: Any) -> Any:
        body, purpose = self._file(request.file_id)
        return SimpleNamespace(bytes=len(body), purpose=purpose)

    async def openai_retrieve_file_content(self, request: Any) -> Any:
        return SimpleNamespace(body=self._file(request.file_id)[0])


class Door:
    """The OGX front door in this process (its engine not started: an admitted job would stay queued)."""

    def __init__(self, root: Path) -> None:
        config = TrlPostTrainingConfig(output_dir=str(root / "jobs"), job_store_path=str(root / "jobs.db"))
        self.files = MemoryFiles()
        self.impl = TrlFineTuningImpl(config, self.files)  # type: ignore[arg-type]
        self.impl.engine.output_root.mkdir(parents=True, exist_ok=True)  # what start() does, besides watching jobs

    def refusal(self, **body: Any) -> tuple[int, str | None, str | None, str]:
        """What the API answers a create that is refused: status, param, code and message."""
        try:
            request = CreateFineTuningJobRequest.model_validate(body)
            asyncio.run(self.impl.create_fine_tuning_job(request))
        except ValidationError as invalid:  # the endpoint validates the body before it calls create
            answer = error_response(RequestValidationError(invalid.errors()))
        except Exception as refused:
            answer = error_response(refused)
        else:
            raise AssertionError("the request was admitted")
        assert self.impl.engine.jobs.list() == []  # nothing queued
        error = json.loads(bytes(answer.body))["error"]
        return answer.status_code, error["param"], error["code"], error["message"]
