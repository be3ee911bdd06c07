"""OpenAI's grader endpoints (``client.fine_tuning.alpha.graders``): ``validate`` echoes a grader that checks out,
``run`` grades one sample. A translation to ``graders/``: each grader is checked and graded there, off the event
loop, with the operator's settings (the provider config's grader_* and python_grader_* fields)."""

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from llama_stack_provider_trl.graders import GraderSettings, compile_grader


class ValidateGraderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]


class RunGraderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]
    model_sample: str
    item: Any = None


def graders_router(settings: GraderSettings, route_class: type) -> APIRouter:
    router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["Fine Tuning"], route_class=route_class)

    @router.post("/validate")
    async def validate(request: ValidateGraderRequest) -> dict[str, Any]:
        await asyncio.to_thread(compile_grader, request.grader, settings)
        return {"grader": request.grader}

    @router.post("/run")
    async def run(request: RunGraderRequest) -> dict[str, Any]:
        def grade() -> dict[str, Any]:
            return compile_grader(request.grader, settings).grade(request.model_sample, request.item).to_openai()

        return await asyncio.to_thread(grade)

    return router
