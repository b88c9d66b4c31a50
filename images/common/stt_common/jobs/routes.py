"""The /v1/jobs routes on a service's authenticated router, and the worker's audio route (the link only)."""
from __future__ import annotations

import asyncio
import copy
import time
from typing import Optional

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..dependencies import DISK, REDIS, disk_probe
from .api import Jobs


def jobs_routes(svc, jobs: Jobs, receive) -> None:
    """Mount /v1/jobs on a service's authenticated router. `receive(request)` is the service's
    upload context manager (its limits; the jobs folder as temp dir). The jobs' dependencies, Redis and the disk
    holding STT_JOBS_DIR, are registered with the service: /health and /metrics say how they are, and a failure of
    either is answered by stt_common.dependencies (503 jobs_unavailable, 507 insufficient_storage), not here."""
    fmt_list = ", ".join(jobs.spec.formats)
    if jobs.enabled:
        svc.dependencies.add(REDIS, jobs.ping)
        svc.dependencies.add(DISK, disk_probe(jobs.settings.jobs_dir, jobs.settings.jobs_min_free_mb << 20))

    body = copy.deepcopy(jobs.spec.openapi or {})
    props = body.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema", {}) \
        .get("properties")
    if props is not None:
        props["callback_url"] = {"type": "string", "format": "uri", "description": (
            "Called with a signed POST when the job ends (header X-STT-Signature: t=<unix time>,v1=<HMAC-SHA256 "
            "of '<t>.<body>' with the server's webhook secret>).")}

    # for workers on other hosts, through nginx on the link only (the public vhosts answer 404 for /internal/)
    @svc.app.get("/internal/jobs/{job_id}/audio", include_in_schema=False)
    async def job_audio(request: Request, job_id: str):
        return jobs.audio(job_id, request.headers.get("x-job-token", ""))

    @svc.api.post("/v1/jobs", tags=["jobs"], status_code=202, openapi_extra=body or None,
                  summary="Queue a transcription job (same fields as the synchronous endpoint, plus callback_url)")
    async def create_job(request: Request):
        jobs.conn  # 503 before reading the body when jobs are off
        jobs.check_room(request)   # 507 before reading it when the jobs' disk is full
        async with receive(request) as up:
            return await jobs.submit(request, up)

    # Redis is called in the thread pool: a Redis that answers slowly or not at all (restarting: the client's
    # back-off) holds that request only, never the event loop that /health and every other request need
    @svc.api.get("/v1/jobs", tags=["jobs"], summary="The caller's recent jobs, newest first")
    async def list_jobs(request: Request, limit: int = 20):
        return JSONResponse(await run_in_threadpool(jobs.list, request, limit))

    @svc.api.get("/v1/jobs/{job_id}", tags=["jobs"],
                 summary="A job's status and progress; with wait=N (up to 60 s) the answer waits until the job "
                         "has finished or N seconds have passed (long polling)")
    async def get_job(request: Request, job_id: str, wait: float = 0):
        body = await run_in_threadpool(jobs.status, request, job_id)
        deadline = time.monotonic() + max(0.0, min(float(wait), 60.0))
        while body["status"] in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            body = await run_in_threadpool(jobs.status, request, job_id)
        return JSONResponse(body)

    @svc.api.get("/v1/jobs/{job_id}/result", tags=["jobs"],
                 summary=f"A finished job's result (response_format: {fmt_list}); 409 while not finished")
    async def get_result(request: Request, job_id: str, response_format: Optional[str] = None):
        return await run_in_threadpool(jobs.result, request, job_id, response_format)

    @svc.api.delete("/v1/jobs/{job_id}", tags=["jobs"],
                    summary="Cancel a queued or running job (a running one stops at its next window); "
                            "a finished one's audio and result are deleted")
    async def delete_job(request: Request, job_id: str):
        return JSONResponse(await run_in_threadpool(jobs.cancel, request, job_id))
