"""The /v1/jobs routes on a service's authenticated router, and the link interface for worker hosts (link.py): two
routers whose handlers get the service's Jobs (and the link's state) through `Depends`, mounted by `mount_jobs`.

Redis and DNS are blocking: every handler that reaches them runs them in a worker thread (sync handlers run in
FastAPI's thread pool; the async ones hand their blocking parts to it), so the event loop never waits on Redis or a
name server, also while a status request long-polls (`?wait=`)."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from typing import Callable, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..dependencies import DISK, REDIS, disk_probe
from ..errors import APIError, bad_request
from .api import Jobs, owner_of
from .link import (NEXT_WAIT_S, LinkAuth, active_lease, next_assignment, parse_result, report_failure, report_progress,
                   store_result)
from .spec import JobSpec

MAX_LINK_REQUEST = 16 * 1024   # a ticket, a beat, a failure: small JSON bodies


def mount_jobs(svc, jobs: Jobs, receive) -> None:
    """Mount /v1/jobs on a service's authenticated router, and the link's routes on the app where worker hosts are
    configured. `receive(request)` is the service's upload context manager (its limits; the jobs folder as temp dir);
    the routes get it and `jobs` through `Depends` (`app.state.jobs`, `app.state.job_upload`). The jobs'
    dependencies, Redis and the disk holding STT_JOBS_DIR, are registered with the service: /health and /metrics say
    how they are, and a failure of either is answered by stt_common.dependencies (503 jobs_unavailable, 507
    insufficient_storage), not here."""
    if jobs.enabled:
        svc.dependencies.add(REDIS, jobs.ping)
        svc.dependencies.add(DISK, disk_probe(jobs.settings.jobs_dir, jobs.settings.jobs_min_free_mb << 20))
    svc.app.state.jobs, svc.app.state.job_upload = jobs, receive
    if jobs.settings.link_workers_file:
        svc.app.state.link = FrontLink(jobs, LinkAuth(jobs.settings.link_workers_file))
        svc.app.include_router(link_router)
    svc.api.include_router(jobs_router(jobs.spec))


def service_jobs(request: Request) -> Jobs:
    """The service's Jobs (mount_jobs keeps them in `app.state.jobs`)."""
    return request.app.state.jobs


def job_upload(request: Request) -> Callable:
    """The service's upload context for a job's audio (mount_jobs keeps it in `app.state.job_upload`)."""
    return request.app.state.job_upload


def submit_openapi(spec: JobSpec) -> Optional[dict]:
    """POST /v1/jobs's multipart body for /docs: the service's own fields (its spec), plus callback_url."""
    body = copy.deepcopy(spec.openapi or {})
    props = body.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema", {}) \
        .get("properties")
    if props is not None:
        props["callback_url"] = {"type": "string", "format": "uri", "description": (
            "Called with a signed POST when the job ends (header X-STT-Signature: t=<unix time>,v2=<HMAC-SHA256 of "
            "'<t>.<callback_url>.<body>' with your webhook secret, GET /v1/jobs/webhook-secret>). Public addresses "
            "only; redirects are not followed.")}
    return body or None


async def create_job(request: Request, jobs: Jobs = Depends(service_jobs), receive: Callable = Depends(job_upload)):
    # 503 when jobs are off, 429 when the caller or the queue is at a limit, 507 when the jobs' disk is full:
    # all before the body is read
    await run_in_threadpool(jobs.precheck, owner_of(request))
    jobs.check_room(request)
    async with receive(request) as up:
        return await jobs.submit(request, up)


async def list_jobs(request: Request, limit: int = 20, jobs: Jobs = Depends(service_jobs)):
    return JSONResponse(await run_in_threadpool(jobs.list, request, limit))


def get_webhook_secret(request: Request, jobs: Jobs = Depends(service_jobs)):
    return JSONResponse(jobs.webhook_secret(request))


async def put_webhook_secret(request: Request, jobs: Jobs = Depends(service_jobs)):
    raw = await request.body()
    try:
        secret = json.loads(raw or b"{}").get("secret")
    except (ValueError, AttributeError):
        raise bad_request("The body must be JSON: {\"secret\": \"...\"}.", code="invalid_value") from None
    return JSONResponse(await run_in_threadpool(jobs.set_webhook_secret, request, secret or ""))


def delete_webhook_secret(request: Request, jobs: Jobs = Depends(service_jobs)):
    return JSONResponse(jobs.set_webhook_secret(request, None))


async def get_job(request: Request, job_id: str, wait: float = 0, jobs: Jobs = Depends(service_jobs)):
    body = await run_in_threadpool(jobs.status, request, job_id)
    deadline = time.monotonic() + max(0.0, min(float(wait), 60.0))
    while body["status"] in ("queued", "running") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        body = await run_in_threadpool(jobs.status, request, job_id)
    return JSONResponse(body)


async def get_result(request: Request, job_id: str, response_format: Optional[str] = None,
                     jobs: Jobs = Depends(service_jobs)):
    return await run_in_threadpool(jobs.result, request, job_id, response_format)


async def delete_job(request: Request, job_id: str, jobs: Jobs = Depends(service_jobs)):
    return JSONResponse(await run_in_threadpool(jobs.cancel, request, job_id))


def jobs_router(spec: JobSpec) -> APIRouter:
    """The /v1/jobs routes (the handlers above), with what their schema says of this service: its job's fields and
    its result formats."""
    router = APIRouter()
    fmt_list = ", ".join(spec.formats)
    router.add_api_route("/v1/jobs", create_job, methods=["POST"], tags=["jobs"], status_code=202,
                         openapi_extra=submit_openapi(spec),
                         summary="Queue a transcription job (same fields as the synchronous endpoint, plus callback_url)")
    router.add_api_route("/v1/jobs", list_jobs, methods=["GET"], tags=["jobs"],
                         summary="The caller's recent jobs, newest first, and its quota usage")
    router.add_api_route("/v1/jobs/webhook-secret", get_webhook_secret, methods=["GET"], tags=["jobs"],
                         summary="The secret that signs the caller's webhooks (derived for each caller, or set by it)")
    router.add_api_route("/v1/jobs/webhook-secret", put_webhook_secret, methods=["PUT"], tags=["jobs"],
                         summary="Set the caller's own webhook secret: JSON {\"secret\": 32-256 characters}")
    router.add_api_route("/v1/jobs/webhook-secret", delete_webhook_secret, methods=["DELETE"], tags=["jobs"],
                         summary="Drop the caller's own webhook secret: back to the one derived for it")
    router.add_api_route("/v1/jobs/{job_id}", get_job, methods=["GET"], tags=["jobs"],
                         summary="A job's status and progress; with wait=N (up to 60 s) the answer waits until the "
                                 "job has finished or N seconds have passed (long polling)")
    router.add_api_route("/v1/jobs/{job_id}/result", get_result, methods=["GET"], tags=["jobs"],
                         summary=f"A finished job's result (response_format: {fmt_list}); 409 while not finished")
    router.add_api_route("/v1/jobs/{job_id}", delete_job, methods=["DELETE"], tags=["jobs"],
                         summary="Cancel a queued or running job (a running one stops at its next window); "
                                 "a finished one's audio and result are deleted")
    return router


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


class FrontLink:
    """The front's side of the link (link.py) for one service: its Jobs, the worker hosts' tokens, the bounds of what
    they hand in. mount_jobs keeps it in `app.state.link` where worker hosts are configured."""

    def __init__(self, jobs: Jobs, auth: LinkAuth):
        self.jobs, self.auth, self.service = jobs, auth, jobs.spec.service
        self.max_seconds = float(jobs.settings.job_max_audio_seconds)
        self.max_result = int(jobs.settings.link_max_result_mb * 1024 * 1024)


def front_link(request: Request) -> FrontLink:
    return request.app.state.link


def link_host(request: Request, link: FrontLink = Depends(front_link)) -> str:
    """The worker host whose token the request carries, or 401 (before the body is read)."""
    return link.auth.host(request.headers.get("authorization", ""))


# The worker hosts' interface (link.py), on the app itself (their token, not an API key): reached only through nginx's
# link server (the public vhosts answer 404 for /internal/).
link_router = APIRouter()


@link_router.post("/internal/link/next", include_in_schema=False)
async def link_next(request: Request, host: str = Depends(link_host), link: FrontLink = Depends(front_link)):
    body = await _small_json(request)
    ticket, slot = str(body.get("ticket") or ""), str(body.get("slot") or "")
    if not (8 <= len(ticket) <= 64 and all(c in "0123456789abcdef" for c in ticket)) \
            or not (1 <= len(slot) <= 64 and all(c.isalnum() or c in "-_." for c in slot)):
        raise APIError(422, "ticket (8-64 hex digits) and slot (a short name) are needed.", code="invalid_value")
    try:   # how long to wait for a job: NEXT_WAIT_S unless the slot asks for less
        wait = min(NEXT_WAIT_S, max(5.0, float(body.get("wait") or NEXT_WAIT_S)))
    except (TypeError, ValueError):
        wait = NEXT_WAIT_S
    assignment = await run_in_threadpool(next_assignment, link.jobs.blocking_conn, link.service, host, slot, ticket,
                                         wait)
    return Response(status_code=204) if assignment is None else JSONResponse(assignment)


@link_router.get("/internal/link/leases/{lease}/audio", include_in_schema=False)
def link_audio(lease: str, host: str = Depends(link_host), link: FrontLink = Depends(front_link)):
    h = active_lease(link.jobs.conn, lease, host)
    path = os.path.join(link.jobs.folder(h["job"]), "audio")
    if not os.path.exists(path):
        raise APIError(410, "This job's audio is gone.", code="lease_ended")
    return FileResponse(path, media_type="application/octet-stream")


@link_router.post("/internal/link/leases/{lease}/progress", include_in_schema=False)
async def link_progress(request: Request, lease: str, host: str = Depends(link_host),
                        link: FrontLink = Depends(front_link)):
    body = await _small_json(request)
    return JSONResponse(await run_in_threadpool(report_progress, link.jobs.conn, lease, host, body, link.max_seconds))


@link_router.post("/internal/link/leases/{lease}/failure", include_in_schema=False)
async def link_failure(request: Request, lease: str, host: str = Depends(link_host),
                       link: FrontLink = Depends(front_link)):
    body = await _small_json(request)
    await run_in_threadpool(report_failure, link.jobs.conn, lease, host, body)
    return JSONResponse({"ok": True})


@link_router.post("/internal/link/leases/{lease}/result", include_in_schema=False)
async def link_result(request: Request, lease: str, host: str = Depends(link_host),
                      link: FrontLink = Depends(front_link)):
    h = await run_in_threadpool(active_lease, link.jobs.conn, lease, host)   # before reading a large body
    data = await _body(request, link.max_result)
    return JSONResponse(await run_in_threadpool(accept_result, link.jobs, lease, host, h["job"], data,
                                                link.max_seconds))


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
