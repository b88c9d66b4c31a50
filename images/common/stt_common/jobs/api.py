"""The API side of the jobs: accept, describe, render, cancel, list, the caller's webhook secret, count.

Everything here that talks to Redis or DNS is blocking: the routes (routes.py) call it from a worker thread, never
from the event loop."""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from typing import TYPE_CHECKING, Dict, Optional

from fastapi import Request

if TYPE_CHECKING:
    from redis import Redis
from fastapi.responses import JSONResponse, Response

from ..auth import caller_of
from ..dependencies import check_free_space
from ..errors import APIError, bad_request, not_found
from ..outbound import policy_from
from . import quotas
from .connection import redis_connection
from .keys import (EXECUTE, ON_FAILURE, caller_secret_key, cancel_key, deliveries_key, owner_index_key, queue_name,
                   result_key, stats_key, worker_stats_key)
from .signing import SECRET_PATTERN, caller_secret, check_callback_url
from .spec import JobSpec
from .status import describe, iso_now, job_state
from .store import job_folder, load_result, remove_files

log = logging.getLogger("stt_common.jobs")


def owner_of(request: Request) -> str:
    """Whose jobs a request sees: its caller's id (stt_common.auth: an API key, or a basic-auth user)."""
    return caller_of(request).id


class Jobs:
    """The API side: accept, describe, render, cancel, list."""

    def __init__(self, spec: JobSpec, settings, metrics=None):
        self.spec, self.settings, self.metrics = spec, settings, metrics
        self.enabled = bool(settings.redis_url)
        self.limits = quotas.Limits.from_settings(settings)
        self.policy = policy_from(settings.webhook_allow_private, getattr(settings, "webhook_allow_networks", ""))
        self._conn: Optional[Redis] = None
        self._blocking: Optional[Redis] = None
        self._probe: Optional[Redis] = None

    @property
    def blocking_conn(self):
        """A connection for the link's long polls (BLPOP up to a minute), apart from the short calls'."""
        _ = self.conn   # 503 when jobs are off
        if self._blocking is None:
            self._blocking = redis_connection(self.settings, socket_timeout=90)
        return self._blocking

    @property
    def conn(self):
        if not self.enabled:
            raise APIError(503, "Asynchronous jobs are not configured on this server (STT_REDIS_URL).",
                           type="server_error", code="jobs_unavailable")
        if self._conn is None:
            self._conn = redis_connection(self.settings)
        return self._conn

    def ping(self) -> dict:
        """The `redis` dependency's probe (/health, /metrics): one PING, no retry, 2 s at most."""
        if self._probe is None:
            self._probe = redis_connection(self.settings, role="probe")
        self._probe.ping()
        return {"status": "ok"}

    def check_room(self, request: Request) -> None:
        """507 insufficient_storage before a body byte is read when the upload would leave the jobs' disk with
        less than STT_JOBS_MIN_FREE_MB free (the request's Content-Length; a chunked body is checked by its writes)."""
        length = request.headers.get("content-length", "")
        check_free_space(self.settings.jobs_dir, int(length) if length.isdigit() else 0,
                         self.settings.jobs_min_free_mb << 20)

    def queue(self):
        from .codec import queue
        return queue(self.conn, queue_name(self.spec.service), int(self.settings.job_max_seconds))

    def fetch(self, job_id: str, owner: Optional[str] = None):
        from rq.exceptions import NoSuchJobError

        from .codec import fetch

        if not job_id or len(job_id) > 64 or not all(c in "0123456789abcdef" for c in job_id):
            raise not_found(f"No job '{job_id[:64]}'.", code="job_not_found")
        try:
            job = fetch(self.conn, job_id)
        except NoSuchJobError:
            raise not_found(f"No job '{job_id}' (unknown, or expired after its retention time).",
                            code="job_not_found") from None
        if "unserialized" in job.meta:   # not JSON: written by something else than this service
            log.warning("job %s: its stored meta is not JSON: ignored", job_id)
            raise not_found(f"No job '{job_id}'.", code="job_not_found")
        if job.meta.get("service") != self.spec.service or (owner is not None and job.meta.get("owner") != owner):
            raise not_found(f"No job '{job_id}'.", code="job_not_found")
        return job

    def folder(self, job_id: str) -> str:
        return job_folder(self.settings, job_id)

    # ------------------------------------------------------------------ submission
    def precheck(self, owner: str) -> None:
        """Before the upload is read: 503 when jobs are off, 429 when the caller or the queue is at a limit."""
        quotas.precheck(self.conn, self.spec.service, owner, self.limits)

    async def submit(self, request: Request, upload) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        fields = upload.fields
        params = await self.spec.prepare(fields, owner_of(request))
        callback = (fields.get("callback_url") or [""])[-1].strip()
        body = await run_in_threadpool(self.accept, owner_of(request), upload, params, callback)
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})

    def accept(self, owner: str, upload, params: dict, callback: str) -> dict:
        """Queue the job, all or nothing: its folder holds the audio, and one Redis transaction writes the job, its
        queue entry, the caller's index and the quota counts (quotas.admit), or nothing and the folder goes."""
        from rq import Callback, Retry

        if callback:
            if not self.settings.webhook_secret:
                raise bad_request("This server has no webhook secret (STT_WEBHOOK_SECRET): callbacks are off.",
                                  param="callback_url", code="webhooks_unavailable")
            check_callback_url(callback, self.policy)
        conn = self.conn
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        os.makedirs(folder, mode=0o750)
        made: dict = {}
        try:
            audio = os.path.join(folder, "audio")
            os.replace(upload.path, audio)  # same file system: no copy
            size = os.path.getsize(audio)
            meta = {"service": self.spec.service, "owner": owner, "params": params, "callback_url": callback or None,
                    "filename": (upload.filename or "")[:200] or None, "model": params.get("model_name"),
                    "attempts": 0}
            if getattr(upload, "source_url", None):   # audio by URL: its worker downloads it (audio_url)
                meta["source_url"] = upload.source_url
            retries = self.settings.job_retries
            ttl = int(self.settings.job_ttl)

            def enqueue(p):
                made["job"] = self.queue().enqueue_call(
                    EXECUTE, job_id=job_id, meta=meta, timeout=int(self.settings.job_max_seconds),
                    result_ttl=ttl, failure_ttl=ttl, ttl=ttl,
                    retry=Retry(max=retries, interval=self.settings.job_retry_waits) if retries > 0 else None,
                    on_failure=Callback(ON_FAILURE), pipeline=p)
                index, now = owner_index_key(self.spec.service, owner), time.time()
                p.zadd(index, {job_id: now})
                p.zremrangebyscore(index, 0, now - ttl)
                p.expire(index, ttl)

            quotas.admit(conn, self.spec.service, owner, job_id, size, self.limits, ttl, enqueue)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return describe(made["job"])

    # ------------------------------------------------------------------ a caller's jobs
    def status(self, request: Request, job_id: str) -> dict:
        return describe(self.fetch(job_id, owner_of(request)))

    def result(self, request: Request, job_id: str, fmt: Optional[str]) -> Response:
        job = self.fetch(job_id, owner_of(request))
        state = job_state(job)
        if state != "succeeded":
            err = job.meta.get("error") if state == "failed" else None
            msg = f"Job {job_id} is {state}: " + ("no result." if state in ("failed", "canceled") else
                                                  "the result is not ready yet; poll status_url.")
            raise APIError(409, msg + (f" ({err['message']})" if err else ""), code=f"job_{state}")
        params = job.meta.get("params") or {}
        fmt = fmt or params.get("response_format") or "json"
        if fmt not in self.spec.formats:
            raise bad_request(f"Unsupported response_format '{fmt}': use one of {', '.join(self.spec.formats)}.",
                              param="response_format", code="invalid_value")
        result = load_result(self.conn, self.settings, job_id)
        if result is None:
            raise not_found(f"The result of job {job_id} has expired.", code="job_not_found")
        return self.spec.render(result, fmt, params)

    def cancel(self, request: Request, job_id: str) -> dict:
        owner = owner_of(request)
        job = self.fetch(job_id, owner)
        state = job_state(job)
        service = self.spec.service
        if state == "queued":
            job.cancel()
            job.meta.update(state="canceled", finished_at=iso_now())
            job.save_meta()
            remove_files(self.conn, self.settings, service, job_id)
            quotas.finished(self.conn, service, owner, job_id)
        elif state == "running":
            # the worker stops at its next segment or window, then records "canceled"
            self.conn.set(cancel_key(job_id), "1", ex=int(self.settings.job_max_seconds) + 60)
        else:  # finished one way or another: drop its audio and result now instead of at the TTL
            remove_files(self.conn, self.settings, service, job_id)
            self.conn.delete(result_key(job_id))
            self.conn.zrem(owner_index_key(service, owner), job_id)
            job.delete()
            return {"id": job_id, "object": "transcription.job", "status": state, "deleted": True}
        return describe(job)

    def list(self, request: Request, limit: int = 20) -> dict:
        from .codec import fetch_many

        owner = owner_of(request)
        ids = [i.decode() if isinstance(i, bytes) else i
               for i in self.conn.zrevrange(owner_index_key(self.spec.service, owner), 0,
                                            max(1, min(limit, 100)) - 1)]
        jobs = [j for j in fetch_many(self.conn, ids) if j is not None and "unserialized" not in j.meta]
        data = [describe(j) for j in jobs]
        by_worker: Dict[str, int] = {}
        for body in data:
            if body["worker"]:
                by_worker[body["worker"]] = by_worker.get(body["worker"], 0) + 1
        return {"object": "list", "data": data, "workers": by_worker,
                "usage": quotas.usage(self.conn, self.spec.service, owner),
                "limits": {"jobs": self.limits.caller_jobs, "bytes": self.limits.caller_bytes}}

    # ------------------------------------------------------------------ the caller's webhook secret
    def webhook_secret(self, request: Request) -> dict:
        if not self.settings.webhook_secret:
            raise bad_request("This server has no webhook secret (STT_WEBHOOK_SECRET): callbacks are off.",
                              code="webhooks_unavailable")
        secret, source = caller_secret(self.conn, self.settings.webhook_secret, owner_of(request))
        return {"object": "webhook_secret", "secret": secret, "source": source,
                "signature": "X-STT-Signature: t=<unix time>,v2=<HMAC-SHA256 hex of '<t>.<callback_url>.<body>'>"}

    def set_webhook_secret(self, request: Request, secret: Optional[str]) -> dict:
        """The caller's own secret (32-256 characters of [A-Za-z0-9._~+/=-]); None: back to the derived one."""
        owner = owner_of(request)
        if secret is None:
            self.conn.delete(caller_secret_key(owner))
        else:
            if not isinstance(secret, str) or not SECRET_PATTERN.fullmatch(secret):
                raise bad_request("secret: 32 to 256 characters, letters, digits and . _ ~ + / = - only.",
                                  param="secret", code="invalid_value")
            self.conn.set(caller_secret_key(owner), secret)
        return self.webhook_secret(request)

    # ------------------------------------------------------------------ counts for /health and /metrics
    def counts(self) -> dict:
        """Jobs by state and the stats workers keep, for /health (the autostart proxy's idle check) and /metrics."""
        from rq.registry import StartedJobRegistry

        q = self.queue()
        running = StartedJobRegistry(queue=q).count
        scheduled = q.scheduled_job_registry.count
        stats = {k.decode(): float(v) for k, v in self.conn.hgetall(stats_key(self.spec.service)).items()}
        return {"queued": q.count + scheduled, "running": running, "stats": stats,
                "webhooks": int(self.conn.zcard(deliveries_key(self.spec.service)))}

    def per_worker(self) -> dict:
        """Per worker host: its workers alive (RQ workers on the front, link slots polling for a worker host), its
        running jobs, its finished jobs and audio seconds."""
        from rq import Worker
        from rq.registry import StartedJobRegistry

        from .codec import fetch_many
        from .link import slots_seen

        q = self.queue()
        hosts: Dict[str, dict] = {}

        def entry(name: str) -> dict:
            return hosts.setdefault(name, {"workers": 0, "running": 0, "stats": {}})

        for w in Worker.all(queue=q):
            if "/relay-" in w.name:   # a relay stands for a worker host's slot, counted below
                continue
            entry(w.name.rsplit("/", 1)[0] if "/" in w.name else (w.hostname or w.name))["workers"] += 1
        for host, slots in slots_seen(self.conn, self.spec.service).items():
            entry(host)["workers"] += slots
        ids = StartedJobRegistry(queue=q).get_job_ids()
        for job in fetch_many(self.conn, ids):
            if job is not None and job.meta.get("worker"):
                entry(job.meta["worker"])["running"] += 1
        for field, value in self.conn.hgetall(worker_stats_key(self.spec.service)).items():
            name, _, stat = field.decode().rpartition("|")
            if name:
                entry(name)["stats"][stat] = float(value)
        return hosts
