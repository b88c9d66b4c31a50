"""The /v1/jobs routes on a service's authenticated router, and the link interface for worker hosts (link.py).

Redis and DNS are blocking: every handler that reaches them runs them in a worker thread (sync handlers run in
FastAPI's thread pool; the async ones hand their blocking parts to it), so the event loop never waits on Redis or a
name server, also while a status request long-polls (`?wait=`)."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from typing import Optional

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..dependencies import DISK, REDIS, disk_probe
from ..errors import APIError, bad_request
from .api import Jobs, owner_of
from .link import (NEXT_WAIT_S, LinkAuth, active_lease, next_assignment, parse_result, report_failure, report_progress,
                   store_result)

MAX_LINK_REQUEST = 16 * 1024   # a ticket, a beat, a failure: small JSON bodies


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
            "Called with a signed POST when the job ends (header X-STT-Signature: t=<unix time>,v2=<HMAC-SHA256 of "
            "'<t>.<callback_url>.<body>' with your webhook secret, GET /v1/jobs/webhook-secret>). Public addresses "
            "only; redirects are not followed.")}

    if jobs.settings.link_workers_file:
        link_routes(svc, jobs, LinkAuth(jobs.settings.link_workers_file))

    @svc.api.post("/v1/jobs", tags=["jobs"], status_code=202, openapi_extra=body or None,
                  summary="Queue a transcription job (same fields as the synchronous endpoint, plus callback_url)")
    async def create_job(request: Request):
        # 503 when jobs are off, 429 when the caller or the queue is at a limit, 507 when the jobs' disk is full:
        # all before the body is read
        await run_in_threadpool(jobs.precheck, owner_of(request))
        jobs.check_room(request)
        async with receive(request) as up:
            return await jobs.submit(request, up)

    @svc.api.get("/v1/jobs", tags=["jobs"], summary="The caller's recent jobs, newest first, and its quota usage")
    async def list_jobs(request: Request, limit: int = 20):
        return JSONResponse(await run_in_threadpool(jobs.list, request, limit))

    @svc.api.get("/v1/jobs/webhook-secret", tags=["jobs"],
                 summary="The secret that signs the caller's webhooks (derived for each caller, or set by it)")
    def get_webhook_secret(request: Request):
        return JSONResponse(jobs.webhook_secret(request))

    @svc.api.put("/v1/jobs/webhook-secret", tags=["jobs"],
                 summary="Set the caller's own webhook secret: JSON {\"secret\": 32-256 characters}")
    async def put_webhook_secret(request: Request):
        raw = await request.body()
        try:
            secret = json.loads(raw or b"{}").get("secret")
        except (ValueError, AttributeError):
            raise bad_request("The body must be JSON: {\"secret\": \"...\"}.", code="invalid_value") from None
        return JSONResponse(await run_in_threadpool(jobs.set_webhook_secret, request, secret or ""))

    @svc.api.delete("/v1/jobs/webhook-secret", tags=["jobs"],
                    summary="Drop the caller's own webhook secret: back to the one derived for it")
    def delete_webhook_secret(request: Request):
        return JSONResponse(jobs.set_webhook_secret(request, None))

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


async def _small_json(request: Request, limit: int = MAX_LINK_REQUEST) -> dict:
    data = await _body(request, limit)
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        raise APIError(422, "The body must be JSON.", code="invalid_value") from None
    if not isinstance(value, dict):
        raise APIError(422, "The body must be a JSON object.", code="invalid_value")
    return value


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The body is larger than {limit} bytes.", code="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def link_routes(svc, jobs: Jobs, auth: LinkAuth) -> None:
    """The worker hosts' interface (link.py), on the app itself (their token, not an API key): reached only through
    nginx's link server (the public vhosts answer 404 for /internal/)."""
    service = jobs.spec.service
    max_seconds = float(jobs.settings.job_max_audio_seconds)
    max_result = int(jobs.settings.link_max_result_mb * 1024 * 1024)

    def host_of(request: Request) -> str:
        return auth.host(request.headers.get("authorization", ""))

    @svc.app.post("/internal/link/next", include_in_schema=False)
    async def link_next(request: Request):
        host = host_of(request)
        body = await _small_json(request)
        ticket, slot = str(body.get("ticket") or ""), str(body.get("slot") or "")
        if not (8 <= len(ticket) <= 64 and all(c in "0123456789abcdef" for c in ticket)) \
                or not (1 <= len(slot) <= 64 and all(c.isalnum() or c in "-_." for c in slot)):
            raise APIError(422, "ticket (8-64 hex digits) and slot (a short name) are needed.", code="invalid_value")
        try:   # how long to wait for a job: NEXT_WAIT_S unless the slot asks for less
            wait = min(NEXT_WAIT_S, max(5.0, float(body.get("wait") or NEXT_WAIT_S)))
        except (TypeError, ValueError):
            wait = NEXT_WAIT_S
        assignment = await run_in_threadpool(next_assignment, jobs.blocking_conn, service, host, slot, ticket, wait)
        return Response(status_code=204) if assignment is None else JSONResponse(assignment)

    @svc.app.get("/internal/link/leases/{lease}/audio", include_in_schema=False)
    def link_audio(request: Request, lease: str):
        h = active_lease(jobs.conn, lease, host_of(request))
        path = os.path.join(jobs.folder(h["job"]), "audio")
        if not os.path.exists(path):
            raise APIError(410, "This job's audio is gone.", code="lease_ended")
        return FileResponse(path, media_type="application/octet-stream")

    @svc.app.post("/internal/link/leases/{lease}/progress", include_in_schema=False)
    async def link_progress(request: Request, lease: str):
        host = host_of(request)
        body = await _small_json(request)
        return JSONResponse(await run_in_threadpool(report_progress, jobs.conn, lease, host, body, max_seconds))

    @svc.app.post("/internal/link/leases/{lease}/failure", include_in_schema=False)
    async def link_failure(request: Request, lease: str):
        host = host_of(request)
        body = await _small_json(request)
        await run_in_threadpool(report_failure, jobs.conn, lease, host, body)
        return JSONResponse({"ok": True})

    @svc.app.post("/internal/link/leases/{lease}/result", include_in_schema=False)
    async def link_result(request: Request, lease: str):
        host = host_of(request)
        h = await run_in_threadpool(active_lease, jobs.conn, lease, host)   # before reading a large body
        data = await _body(request, max_result)
        return JSONResponse(await run_in_threadpool(accept_result, jobs, lease, host, h["job"], data, max_seconds))


def accept_result(jobs: Jobs, lease: str, host: str, job_id: str, data: bytes, max_seconds: float) -> dict:
    """A worker host's result for the job its lease names (never another): JSON of the results' shape that renders
    in every format of the service, as GET /v1/jobs/<id>/result will render it."""
    active_lease(jobs.conn, lease, host)
    result = parse_result(data, max_seconds)
    params = jobs.fetch(job_id).meta.get("params") or {}
    for fmt in jobs.spec.formats:
        try:
            jobs.spec.render(result, fmt, params)
        except Exception as e:  # noqa: BLE001 - whatever it lacks, it is refused here, not when a client asks
            raise APIError(422, f"The result is refused: it does not render as {fmt} ({type(e).__name__}).",
                           code="invalid_result") from None
    store_result(jobs.conn, lease, jobs.folder(job_id), result)
    return {"ok": True}
