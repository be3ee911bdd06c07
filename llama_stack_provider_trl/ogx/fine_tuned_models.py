"""A succeeded job's ``fine_tuned_model`` as a model of OGX's models table, served by this package's inference
provider (serving/): ``client.models.list()`` and ``.retrieve`` show it, ``client.chat.completions.create`` calls
it, ``client.models.delete`` removes it.

The model is registered as the job's owner (OGX's models table records the creator as owner), so OGX's access policy
decides who may read, call and delete it exactly as for the job: another user gets the 404 of an unknown model. It is
registered once, when the job is first seen succeeded (a read of the job, or the loop that looks every few seconds);
the job's openai_job.json records that, so a deleted model stays deleted and a restart registers nothing twice (OGX
keeps its models table in the server's kvstore).
"""

import asyncio
import contextlib
import logging
import secrets
import time
from http import HTTPStatus
from typing import Any

from ogx.core.access_control.access_control import AccessDeniedError
from ogx_api import ModelNotFoundError, ModelType, RegisterModelRequest, UnregisterModelRequest

from llama_stack_provider_trl.engine.engine import Engine
from llama_stack_provider_trl.engine.job_record import JobRecord
from llama_stack_provider_trl.engine.jobs import JobNotFound
from llama_stack_provider_trl.ogx.access import acting_as
from llama_stack_provider_trl.ogx.api import OpenAIError
from llama_stack_provider_trl.serving.checkpoints import model_files
from llama_stack_provider_trl.serving.protocol import ModelFiles
from llama_stack_provider_trl.serving.vllm_lora import VllmAdapters, VllmLoraError

logger = logging.getLogger(__name__)

REGISTER_EVERY_S = 2.0


class FineTunedModels:
    """Registration of fine-tuned models with OGX's models table (``models``: its ModelsRoutingTable)."""

    def __init__(
        self,
        models: Any,
        engine: Engine,
        openai_jobs: dict[str, Any],
    ) -> None:
        self.models = models
        self.engine = engine  # job records and final models
        self.openai_jobs = openai_jobs  # job id -> OpenAIJob (fine_tuned_model, model_registered)
        self.provider_id: str | None = None  # the serving provider's id in ogx-run.yaml
        self.vllm_provider_id: str | None = None  # a remote::vllm provider that serves LoRA adapters (docs/serving.md)
        self._lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Hand the serving provider our lookup of model files, and register what succeeded while we were away."""
        for provider_id, impl in getattr(self.models, "impls_by_provider_id", {}).items():
            if hasattr(impl, "add_model_source"):
                impl.add_model_source(self.files)
                self.provider_id = provider_id
                self.vllm_provider_id = impl.config.vllm_provider_id
                break
        if self.provider_id is None:
            logger.info("fine_tuning: no inline::trl inference provider; fine-tuned models are not served")
            return
        self._loop = asyncio.create_task(self._register_forever())

    def _vllm(self, provider_id: str | None) -> VllmAdapters | None:
        provider = getattr(self.models, "impls_by_provider_id", {}).get(provider_id) if provider_id else None
        return None if provider is None else VllmAdapters.of_provider(provider)

    async def _reload_vllm_adapters(self) -> None:
        """A restarted vLLM has forgotten its adapters: load those registered there again (once, at start)."""
        for openai_job in list(self.openai_jobs.values()):
            vllm = self._vllm(openai_job.served_by) if openai_job.served_by != self.provider_id else None
            files = self.files(openai_job.fine_tuned_model) if vllm is not None else None
            if vllm is not None and files is not None and files.adapter is not None:
                try:
                    await vllm.load(openai_job.fine_tuned_model, files.adapter)
                except VllmLoraError as exc:
                    logger.warning("fine_tuning: %s: %s", openai_job.fine_tuned_model, exc)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    def files(self, name: str) -> ModelFiles | None:
        """A fine-tuned model's files (for the serving provider, which has checked the caller against the table)."""
        for openai_job in self.openai_jobs.values():
            if openai_job.fine_tuned_model == name:
                try:
                    record = self.engine.record(openai_job.id)
                except JobNotFound:
                    return None
                return model_files(self.engine.final_model(record)) if record.status == "completed" else None
        return None

    async def _register_forever(self) -> None:
        await self._reload_vllm_adapters()
        while True:
            for openai_job in list(self.openai_jobs.values()):
                if not openai_job.model_registered:
                    with contextlib.suppress(JobNotFound):
                        await self.register(self.engine.record(openai_job.id))
            await asyncio.sleep(REGISTER_EVERY_S)

    async def register(self, record: JobRecord) -> None:
        """Register a succeeded job's model, once, as its owner."""
        openai_job = self.openai_jobs.get(record.job_uuid)
        if self.provider_id is None or openai_job is None or record.status != "completed":
            return
        async with self._lock:
            if openai_job.model_registered:
                return
            provider_id = await self._serving_provider(openai_job.fine_tuned_model)
            request = RegisterModelRequest(
                model_id=openai_job.fine_tuned_model,
                provider_model_id=openai_job.fine_tuned_model,
                provider_id=provider_id,
                model_type=ModelType.llm,
                # _unprefixed_alias: OGX's own marker for a model listed under its name, not "<provider>/<name>"
                metadata={
                    "_unprefixed_alias": True,
                    "fine_tuning_job": record.job_uuid,
                    "base_model": openai_job.model,
                },
            )
            try:
                with acting_as(record.owner):
                    await self.models.register_model(request)
            except Exception:
                logger.exception("fine_tuning: job %s: its model could not be registered for serving", record.job_uuid)
                return
            openai_job.model_registered, openai_job.served_by = True, provider_id
            try:
                openai_job.write(record.spec.path)
            except OSError:
                logger.exception("fine_tuning: job %s: cannot record that its model is registered", record.job_uuid)
            logger.info("fine_tuning: %s serves as %s on %s", record.job_uuid, openai_job.fine_tuned_model, provider_id)

    async def _serving_provider(self, name: str) -> str | None:
        """This package's provider, or for a LoRA adapter the configured vLLM, once it has loaded the adapter (a
        vLLM that refuses leaves the adapter served here, saying why in the log)."""
        files = self.files(name)
        vllm = self._vllm(self.vllm_provider_id)
        if vllm is None or files is None or files.adapter is None:
            return self.provider_id
        try:
            await vllm.load(name, files.adapter)
        except VllmLoraError as exc:
            logger.error("fine_tuning: %s stays on %s: %s", name, self.provider_id, exc)
            return self.provider_id
        return self.vllm_provider_id

    async def delete(self, model_id: str) -> dict[str, Any]:
        """``client.models.delete``: a fine-tuned model leaves the models table and the serving provider. Only who
        may change its job deletes it (a project it is shared with only calls it); a model the caller may not read
        is a 404."""
        fine_tuned = next((job for job in self.openai_jobs.values() if job.fine_tuned_model == model_id), None)
        try:
            if fine_tuned is None:
                await self.models.get_model(model_id)  # a model the caller may see, but not a fine-tuned one
                raise OpenAIError(
                    HTTPStatus.FORBIDDEN, f"'{model_id}' is not a fine-tuned model; only fine-tuned models are deleted"
                )
            if not self._may_change_job(fine_tuned.id):
                await self.models.get_model(model_id)  # shared with the caller; else the 404 of a model unseen
                raise OpenAIError(
                    HTTPStatus.FORBIDDEN, f"'{model_id}' is shared with you: only its owner deletes it", param="model"
                )
            await self.models.unregister_model(UnregisterModelRequest(model_id=model_id))
            await self._unload_from_vllm(model_id)
        except ModelNotFoundError as exc:
            raise OpenAIError(
                HTTPStatus.NOT_FOUND, f"no model '{model_id}'; client.models.list() lists them", param="model"
            ) from exc
        except AccessDeniedError:
            raise
        return {"id": model_id, "object": "model", "deleted": True}

    def _may_change_job(self, job_id: str) -> bool:
        try:
            record = self.engine.record(job_id)
        except JobNotFound:
            return True  # no job left to ask: OGX's policy for the model decides
        return self.engine.access.allows("update", job_id, record.owner)

    # -- checkpoint permissions: OpenAI's way to share a fine-tuned model -------------------------------------------
    async def share(self, openai_job: Any, record: JobRecord, project_ids: list[str]) -> list[dict[str, Any]]:
        """Users in each project may read and call the model: its owner in OGX's models table gains the projects,
        which OGX's default access policy matches against the user's ``projects`` attribute."""
        if record.owner is None:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST,
                "this model has no owner (a server without server.auth): every user may call it already",
                param="project_ids",
            )
        created = []
        for project_id in project_ids:
            if not project_id or any(p["project_id"] == project_id for p in openai_job.permissions):
                continue
            permission = {"id": f"cp_{secrets.token_hex(12)}", "created_at": int(time.time()), "project_id": project_id}
            openai_job.permissions.append(permission)
            created.append(permission)
        await self._apply_permissions(openai_job, record)
        return created

    async def unshare(self, openai_job: Any, record: JobRecord, permission_id: str) -> dict[str, Any]:
        kept = [p for p in openai_job.permissions if p["id"] != permission_id]
        if len(kept) == len(openai_job.permissions):
            raise OpenAIError(
                HTTPStatus.NOT_FOUND, f"no permission '{permission_id}' on this model", param="permission_id"
            )
        openai_job.permissions = kept
        await self._apply_permissions(openai_job, record)
        return {"id": permission_id, "object": "checkpoint.permission", "deleted": True}

    async def _apply_permissions(self, openai_job: Any, record: JobRecord) -> None:
        openai_job.write(record.spec.path)
        registered = await self.models.dist_registry.get("model", openai_job.fine_tuned_model)
        if registered is None or registered.owner is None or record.owner is None:
            return  # deleted from the table: nothing serves it to share
        own = list(record.owner.attributes.get("projects", []))
        shared = [p["project_id"] for p in openai_job.permissions]
        registered.owner.attributes = {**record.owner.attributes, "projects": list(dict.fromkeys(own + shared))}
        await self.models.dist_registry.update(registered)

    async def _unload_from_vllm(self, name: str) -> None:
        served_by = next((job.served_by for job in self.openai_jobs.values() if job.fine_tuned_model == name), None)
        vllm = self._vllm(served_by) if served_by != self.provider_id else None
        if vllm is not None:
            try:
                await vllm.unload(name)
            except VllmLoraError as exc:  # it is out of OGX's table all the same: nothing routes to it
                logger.warning("fine_tuning: %s: %s", name, exc)
