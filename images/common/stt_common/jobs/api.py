"""The API side of the jobs: accept, describe, render, cancel, list, hand a job's audio to its worker, count."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import time
import uuid
from typing import Dict, Optional

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..dependencies import check_free_space
from ..errors import APIError, bad_request, not_found
from .connection import redis_connection
from .keys import (EXECUTE, ON_FAILURE, cancel_key, owner_index_key, queue_name, result_key, stats_key,
                   webhook_queue_name, worker_stats_key)
from .signing import check_callback_url
from .spec import JobSpec
from .status import describe, iso_now, job_state
from .store import job_folder, load_result


def owner_of(request: Request) -> str:
    """Who sees a job in `GET /v1/jobs`: a hash of the API key the request came with."""
    auth = request.headers.get("authorization", "")
    key = auth[7:] if auth[:7].lower() == "bearer " else ""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "anonymous"


class Jobs:
    """The API side: accept, describe, render, cancel, list."""

    def __init__(self, spec: JobSpec, settings, metrics=None):
        self.spec, self.settings, self.metrics = spec, settings, metrics
        self.enabled = bool(settings.redis_url)
        self._conn = None
        self._probe = None

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
        from rq import Queue
        return Queue(queue_name(self.spec.service), connection=self.conn,
                     default_timeout=int(self.settings.job_max_seconds))

    def fetch(self, job_id: str, owner: Optional[str] = None):
        from rq.exceptions import NoSuchJobError
        from rq.job import Job as RQJob

        if not job_id or len(job_id) > 64 or not all(c in "0123456789abcdef" for c in job_id):
            raise not_found(f"No job '{job_id[:64]}'.", code="job_not_found")
        try:
            job = RQJob.fetch(job_id, connection=self.conn)
        except NoSuchJobError:
            raise not_found(f"No job '{job_id}' (unknown, or expired after its retention time).",
                            code="job_not_found") from None
        if job.meta.get("service") != self.spec.service or (owner is not None and job.meta.get("owner") != owner):
            raise not_found(f"No job '{job_id}'.", code="job_not_found")
        return job

    def folder(self, job_id: str) -> str:
        return job_folder(self.settings, job_id)

    async def submit(self, request: Request, upload) -> JSONResponse:
        fields = upload.fields
        params = await self.spec.prepare(fields)
        callback = (fields.get("callback_url") or [""])[-1].strip()
        if callback:
            if not self.settings.webhook_secret:
                raise bad_request("This server has no webhook secret (STT_WEBHOOK_SECRET): callbacks are off.",
                                  param="callback_url", code="webhooks_unavailable")
            check_callback_url(callback, self.settings.webhook_allow_private)
        conn = self.conn
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        os.makedirs(folder, mode=0o750)
        try:
            os.replace(upload.path, os.path.join(folder, "audio"))  # same file system: no copy
            owner = owner_of(request)
            meta = {"service": self.spec.service, "owner": owner, "params": params, "callback_url": callback or None,
                    "filename": (upload.filename or "")[:200] or None, "model": params.get("model_name"),
                    "attempts": 0, "audio_token": secrets.token_urlsafe(32)}
            from rq import Callback, Retry
            retries = self.settings.job_retries
            job = self.queue().enqueue(
                EXECUTE, job_id=job_id, meta=meta,
                job_timeout=int(self.settings.job_max_seconds),
                result_ttl=int(self.settings.job_ttl), failure_ttl=int(self.settings.job_ttl),
                ttl=int(self.settings.job_ttl),
                retry=Retry(max=retries, interval=self.settings.job_retry_waits) if retries > 0 else None,
                on_failure=Callback(ON_FAILURE))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        index = owner_index_key(self.spec.service, owner)
        with conn.pipeline() as p:
            p.zadd(index, {job_id: time.time()})
            p.zremrangebyrank(index, 0, -201)   # the newest 200 per caller
            p.expire(index, int(self.settings.job_ttl))
            p.execute()
        body = describe(job)
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})

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
        job = self.fetch(job_id, owner_of(request))
        state = job_state(job)
        if state == "queued":
            job.cancel()
            job.meta.update(state="canceled", finished_at=iso_now())
            job.save_meta()
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        elif state == "running":
            # the worker stops at its next segment or window, then records "canceled"
            self.conn.set(cancel_key(job_id), "1", ex=int(self.settings.job_max_seconds) + 60)
        else:  # finished one way or another: drop its audio and result now instead of at the TTL
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            self.conn.delete(result_key(job_id))
            job.delete()
            return {"id": job_id, "object": "transcription.job", "status": state, "deleted": True}
        return describe(job)

    def list(self, request: Request, limit: int = 20) -> dict:
        from rq.job import Job as RQJob

        owner = owner_of(request)
        ids = [i.decode() if isinstance(i, bytes) else i
               for i in self.conn.zrevrange(owner_index_key(self.spec.service, owner), 0,
                                            max(1, min(limit, 100)) - 1)]
        jobs = [j for j in RQJob.fetch_many(ids, connection=self.conn) if j is not None]
        data = [describe(j) for j in jobs]
        by_worker: Dict[str, int] = {}
        for body in data:
            if body["worker"]:
                by_worker[body["worker"]] = by_worker.get(body["worker"], 0) + 1
        return {"object": "list", "data": data, "workers": by_worker}

    def audio(self, job_id: str, token: str) -> Response:
        """A queued or running job's audio for the worker (on another host) that took it: the job's own token,
        never the API key; gone once the job has finished (or expired)."""
        from fastapi.responses import FileResponse

        job = self.fetch(job_id)
        expected = job.meta.get("audio_token") or ""
        if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()) \
                or job_state(job) not in ("queued", "running"):
            raise not_found(f"No audio for job '{job_id}'.", code="job_not_found")
        path = os.path.join(self.folder(job_id), "audio")
        if not os.path.exists(path):
            raise not_found(f"No audio for job '{job_id}'.", code="job_not_found")
        return FileResponse(path, media_type="application/octet-stream")

    def counts(self) -> dict:
        """Jobs by state and the stats workers keep, for /health (the autostart proxy's idle check) and /metrics."""
        from rq.registry import StartedJobRegistry

        from rq import Queue

        q = self.queue()
        running = StartedJobRegistry(queue=q).count
        # webhooks from worker hosts wait for the front's worker: the front stays up while any are queued
        scheduled = q.scheduled_job_registry.count + Queue(webhook_queue_name(self.spec.service),
                                                           connection=self.conn).count
        stats = {k.decode(): float(v) for k, v in self.conn.hgetall(stats_key(self.spec.service)).items()}
        return {"queued": q.count + scheduled, "running": running, "stats": stats}

    def per_worker(self) -> dict:
        """Per worker host: its RQ workers alive, its running jobs, its finished jobs and audio seconds."""
        from rq import Worker
        from rq.job import Job as RQJob
        from rq.registry import StartedJobRegistry

        q = self.queue()
        hosts: Dict[str, dict] = {}

        def entry(name: str) -> dict:
            return hosts.setdefault(name, {"workers": 0, "running": 0, "stats": {}})

        for w in Worker.all(queue=q):
            entry(w.name.rsplit("/", 1)[0] if "/" in w.name else (w.hostname or w.name))["workers"] += 1
        ids = StartedJobRegistry(queue=q).get_job_ids()
        for job in RQJob.fetch_many(ids, connection=self.conn):
            if job is not None and job.meta.get("worker"):
                entry(job.meta["worker"])["running"] += 1
        for field, value in self.conn.hgetall(worker_stats_key(self.spec.service)).items():
            name, _, stat = field.decode().rpartition("|")
            if name:
                entry(name)["stats"][stat] = float(value)
        return hosts
