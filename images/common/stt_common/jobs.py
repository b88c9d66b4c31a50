"""Asynchronous transcription jobs on Redis + RQ, the same way for both services.

The API process accepts a job (`POST /v1/jobs`: the same multipart fields as the synchronous endpoint),
keeps the upload on disk in `STT_JOBS_DIR/<id>/audio` (never in Redis) and enqueues it on the RQ queue
`stt-<service>`. Workers (`python -m <service>_server.worker`, RQ `SimpleWorker`s that keep the model
loaded) run it, report progress and heartbeats, store the result as JSON beside the audio, and call the
job's `callback_url` with an HMAC-signed webhook. Status, result (in any response format), cancel and
list are read from Redis by any API process.

A service plugs in a `JobSpec`: how to validate the form before accepting (400s come at once, not after
the queue), how to run one job in the worker, and how to render a stored result.

Nothing is lost: a worker killed mid-job leaves the job in RQ's started registry with a short heartbeat
TTL (STT_JOB_HEARTBEAT_TTL, beats at a quarter of it); any worker's maintenance (every half of it) finds it
abandoned and RQ retries it while it has
retries left (`STT_JOB_RETRIES`). Redis persists queued jobs (AOF, set up by the deploy).

Retries back off (`STT_JOB_RETRY_INTERVALS`, 10 s then 60 s by default): a retried job is scheduled (status
`queued`, its `attempts` so far and `retry_at`), and RQ's scheduler, which the job workers run, requeues it when
due. A job that kills every worker it lands on (out of memory on one file) so spends its retries over minutes,
not seconds. RQ's scheduler runs in one worker at a time (a lock in Redis, refreshed every second, expiring
after 61 s); the scheduler dies with its worker, so a worker takes over a lock whose worker is gone (its
registration expired: within STT_JOB_HEARTBEAT_TTL of a death mid-job) instead of waiting out the 61 s. After
the last attempt the job fails with `job_failed` saying how many times it failed, and its webhook is sent, also
when its worker died (RQ's failure callback, `on_failure`, run by the worker that finds the job abandoned).

Worker hosts (issue 14): a worker on another machine reaches Redis over TLS (`rediss://`, a client certificate
of the deploy's link CA and its own Redis user) and has no access to the front's disk. It fetches a job's audio
from the front (`STT_JOBS_FETCH_URL`: nginx on the link, the same client certificate) with the job's own token
(`GET /internal/jobs/<id>/audio`, header X-Job-Token; answered only while the job is queued or running), keeps
the copy in its own jobs_dir for the job's run only, and stores the result in Redis (`stt:result:<id>`, expiring
with the job) instead of beside the audio. Whichever attempt finishes first claims the job (`stt:finished:<id>`,
SET NX): a worker that was cut off and comes back after its job was retried elsewhere drops its late result, so a
client never sees a job finish twice (one webhook, one result).
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, List, Optional, Sequence
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .errors import APIError, bad_request, error_body, not_found
from .executor import JobStopped

log = logging.getLogger("stt_common.jobs")

PROGRESS_EVERY_S = 1.0  # progress is written to Redis at most this often
WEBHOOK_RETRY_INTERVALS = [10, 60, 300, 900, 1800]
SIGNATURE_HEADER = "X-STT-Signature"


# ------------------------------------------------------------------------------------------- the plug-in
@dataclass
class JobSpec:
    service: str                                             # queue stt-<service>
    formats: Sequence[str]                                   # result formats
    prepare: Callable[[Dict[str, List[str]]], Awaitable[dict]]   # API: validate the form -> job parameters
    run: Callable[[str, dict, "JobContext"], dict]           # worker: audio path, parameters -> JSON result
    render: Callable[[dict, str, dict], Response]            # API: stored result, format, parameters
    warm: Optional[Callable[[], None]] = None                # worker: load the default model at start
    openapi: Optional[dict] = None                           # the multipart body, for /docs and schema tests


def queue_name(service: str) -> str:
    return f"stt-{service}"


def webhook_queue_name(service: str) -> str:
    return f"stt-{service}-webhooks"


def redis_connection(settings):
    """The Redis connection for STT_REDIS_URL (redis://, rediss:// or unix://) and STT_REDIS_PASSWORD."""
    from redis import Redis

    tls = {}
    if settings.redis_url.startswith("rediss://"):
        tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.link_ca or None,
               "ssl_certfile": settings.link_cert or None, "ssl_keyfile": settings.link_key or None}
    return Redis.from_url(settings.redis_url, password=settings.redis_password or None,
                          socket_connect_timeout=5, health_check_interval=30, **tls)


def worker_name(settings) -> str:
    """The name a job's `worker` field and the per-host metrics show: the deploy's host name."""
    return (getattr(settings, "worker_name", "") or socket.gethostname()).strip()


def link_ssl_context(settings) -> ssl.SSLContext:
    """TLS to the front over the link: its certificate checked against the link CA, ours presented."""
    ctx = ssl.create_default_context(cafile=settings.link_ca or None)
    if settings.link_cert:
        ctx.load_cert_chain(settings.link_cert, settings.link_key or None)
    return ctx


def owner_of(request: Request) -> str:
    """Who sees a job in `GET /v1/jobs`: a hash of the API key the request came with."""
    auth = request.headers.get("authorization", "")
    key = auth[7:] if auth[:7].lower() == "bearer " else ""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "anonymous"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature: HMAC-SHA256 of `<timestamp>.<body>` with the shared secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300, now: Optional[float] = None) -> bool:
    """Check a webhook's signature header (what a receiver does; documented in images/README.md)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


def check_callback_url(url: str, allow_private: bool) -> str:
    """http(s) only; by default never a loopback, private or link-local address (no requests forged
    into the host's own services)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("callback_url must be an http:// or https:// URL.", param="callback_url",
                          code="invalid_callback_url")
    if len(url) > 2048:
        raise bad_request("callback_url is too long.", param="callback_url", code="invalid_callback_url")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError:
            raise bad_request(f"callback_url: cannot resolve '{parts.hostname}'.", param="callback_url",
                              code="invalid_callback_url") from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
                raise bad_request("callback_url points to a private or local address.", param="callback_url",
                                  code="invalid_callback_url")
    return url


# ------------------------------------------------------------------------------------------- status
def _iso(dt) -> Optional[str]:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def job_state(job) -> str:
    """Our five states from RQ's status and what the worker recorded in the job's meta."""
    recorded = job.meta.get("state")
    if recorded in ("succeeded", "failed", "canceled"):
        return recorded
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    if status == "started":
        return "running"
    if status in ("queued", "deferred", "scheduled"):
        return "queued"
    if status == "finished":
        return "succeeded"
    if status in ("canceled", "stopped"):
        return "canceled"
    return "failed"


def retry_time(job) -> Optional[str]:
    """When a retried job is due back in its queue (RQ's scheduled registry), or None (not waiting)."""
    from rq.registry import ScheduledJobRegistry

    try:
        if getattr(job.get_status(refresh=False), "value", None) != "scheduled":
            return None
        when = ScheduledJobRegistry(job.origin, connection=job.connection).get_scheduled_time(job)
    except Exception:  # noqa: BLE001 - a hint, like the queue position
        return None
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def failed_error(attempts: int, why: str) -> dict:
    """The OpenAI-shaped error of a job whose every attempt crashed or lost its worker."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return error_body(f"The job failed {times}: {why}.", "server_error", None, "job_failed")["error"]


def describe(job, base_path: str = "/v1/jobs") -> dict:
    meta = job.meta
    state = job_state(job)
    total = meta.get("seconds_total")
    done = meta.get("seconds_done", 0.0)
    if state == "succeeded" and total:
        done = total
    body = {
        "id": job.id, "object": "transcription.job", "status": state,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": meta.get("finished_at") or (_iso(job.ended_at) if state in ("succeeded", "failed") else None),
        "progress": {"seconds_done": round(done, 2), "seconds_total": total,
                     "fraction": round(min(1.0, done / total), 4) if total else None},
        "queue_position": None, "attempts": meta.get("attempts", 0), "worker": meta.get("worker"),
        "filename": meta.get("filename"), "model": meta.get("model"),
        "status_url": f"{base_path}/{job.id}", "result_url": None, "error": meta.get("error"),
        "retry_at": None,
    }
    if state == "queued":
        try:
            pos = job.get_position()
            body["queue_position"] = pos
        except Exception:  # noqa: BLE001 - a position is a hint
            pass
        if body["attempts"]:   # a retry waiting out its back-off (STT_JOB_RETRY_INTERVALS)
            body["retry_at"] = retry_time(job)
    if state == "succeeded":
        body["result_url"] = f"{base_path}/{job.id}/result"
    if state == "failed" and not body["error"]:
        body["error"] = error_body("The job failed on the worker.", "server_error", None, "job_failed")["error"]
    return body


# ------------------------------------------------------------------------------------------- the API
class Jobs:
    """The API side: accept, describe, render, cancel, list."""

    def __init__(self, spec: JobSpec, settings, metrics=None):
        self.spec, self.settings, self.metrics = spec, settings, metrics
        self.enabled = bool(settings.redis_url)
        self._conn = None

    @property
    def conn(self):
        if not self.enabled:
            raise APIError(503, "Asynchronous jobs are not configured on this server (STT_REDIS_URL).",
                           type="server_error", code="jobs_unavailable")
        if self._conn is None:
            self._conn = redis_connection(self.settings)
        return self._conn

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
        return os.path.join(self.settings.jobs_dir, job_id)

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
                "stt_common.jobs.execute", job_id=job_id, meta=meta,
                job_timeout=int(self.settings.job_max_seconds),
                result_ttl=int(self.settings.job_ttl), failure_ttl=int(self.settings.job_ttl),
                ttl=int(self.settings.job_ttl),
                retry=Retry(max=retries, interval=self.settings.job_retry_waits) if retries > 0 else None,
                on_failure=Callback("stt_common.jobs.on_failure"))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        index = f"stt:{self.spec.service}:owner:{owner}"
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
        try:
            with open(os.path.join(self.folder(job_id), "result.json"), encoding="utf-8") as f:
                result = json.load(f)
        except FileNotFoundError:
            stored = self.conn.get(result_key(job_id))   # a worker on another host stored it in Redis
            if stored is None:
                raise not_found(f"The result of job {job_id} has expired.", code="job_not_found") from None
            result = json.loads(stored)
        return self.spec.render(result, fmt, params)

    def cancel(self, request: Request, job_id: str) -> dict:
        job = self.fetch(job_id, owner_of(request))
        state = job_state(job)
        if state == "queued":
            job.cancel()
            job.meta.update(state="canceled", finished_at=_iso_now())
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
               for i in self.conn.zrevrange(f"stt:{self.spec.service}:owner:{owner}", 0, max(1, min(limit, 100)) - 1)]
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


def cancel_key(job_id: str) -> str:
    return f"stt:cancel:{job_id}"


def stats_key(service: str) -> str:
    return f"stt:{service}:stats"


def worker_stats_key(service: str) -> str:
    return f"stt:{service}:stats:by-worker"


def result_key(job_id: str) -> str:
    return f"stt:result:{job_id}"


def finished_key(job_id: str) -> str:
    return f"stt:finished:{job_id}"


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def jobs_routes(svc, jobs: Jobs, receive) -> None:
    """Mount /v1/jobs on a service's authenticated router. `receive(request)` is the service's
    upload context manager (its limits; the jobs folder as temp dir)."""
    fmt_list = ", ".join(jobs.spec.formats)

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
        async with receive(request) as up:
            return await jobs.submit(request, up)

    @svc.api.get("/v1/jobs", tags=["jobs"], summary="The caller's recent jobs, newest first")
    async def list_jobs(request: Request, limit: int = 20):
        return JSONResponse(jobs.list(request, limit))

    @svc.api.get("/v1/jobs/{job_id}", tags=["jobs"],
                 summary="A job's status and progress; with wait=N (up to 60 s) the answer waits until the job "
                         "has finished or N seconds have passed (long polling)")
    async def get_job(request: Request, job_id: str, wait: float = 0):
        body = jobs.status(request, job_id)
        deadline = time.monotonic() + max(0.0, min(float(wait), 60.0))
        while body["status"] in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            body = jobs.status(request, job_id)
        return JSONResponse(body)

    @svc.api.get("/v1/jobs/{job_id}/result", tags=["jobs"],
                 summary=f"A finished job's result (response_format: {fmt_list}); 409 while not finished")
    async def get_result(request: Request, job_id: str, response_format: Optional[str] = None):
        return jobs.result(request, job_id, response_format)

    @svc.api.delete("/v1/jobs/{job_id}", tags=["jobs"],
                    summary="Cancel a queued or running job (a running one stops at its next window); "
                            "a finished one's audio and result are deleted")
    async def delete_job(request: Request, job_id: str):
        return JSONResponse(jobs.cancel(request, job_id))


def register_job_metrics(metrics, jobs: Jobs) -> None:
    """Queue length, jobs by state and the workers' counters, read from Redis at scrape time."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            if not jobs.enabled:
                return
            try:
                counts = jobs.counts()
            except Exception as e:  # noqa: BLE001 - a scrape must not fail with Redis
                log.warning("job metrics unavailable: %s", e)
                return
            g = GaugeMetricFamily("stt_jobs", "Jobs by state (queued includes those waiting for a retry)",
                                  labels=["state"])
            g.add_metric(["queued"], counts["queued"])
            g.add_metric(["running"], counts["running"])
            yield g
            stats = counts["stats"]
            c = CounterMetricFamily("stt_jobs_finished", "Jobs finished, by outcome", labels=["outcome"])
            for outcome in ("succeeded", "failed", "canceled"):
                c.add_metric([outcome], stats.get(f"jobs_{outcome}", 0.0))
            yield c
            yield CounterMetricFamily("stt_job_seconds", "Seconds workers spent on jobs",
                                      value=stats.get("job_seconds", 0.0))
            yield CounterMetricFamily("stt_job_audio_seconds", "Seconds of audio transcribed by jobs",
                                      value=stats.get("job_audio_seconds", 0.0))
            yield CounterMetricFamily("stt_webhook_failures", "Webhook deliveries that failed (each attempt)",
                                      value=stats.get("webhook_failures", 0.0))
            try:
                hosts = jobs.per_worker()
            except Exception as e:  # noqa: BLE001
                log.warning("per-worker job metrics unavailable: %s", e)
                return
            alive = GaugeMetricFamily("stt_job_workers", "RQ workers alive, by worker host", labels=["worker"])
            run = GaugeMetricFamily("stt_jobs_running_by_worker", "Jobs running, by worker host", labels=["worker"])
            done = CounterMetricFamily("stt_jobs_finished_by_worker", "Jobs finished, by worker host and outcome",
                                       labels=["worker", "outcome"])
            audio = CounterMetricFamily("stt_job_audio_seconds_by_worker", "Seconds of audio transcribed, by worker "
                                        "host", labels=["worker"])
            for name, h in sorted(hosts.items()):
                alive.add_metric([name], h["workers"])
                run.add_metric([name], h["running"])
                for outcome in ("succeeded", "failed", "canceled"):
                    done.add_metric([name, outcome], h["stats"].get(f"jobs_{outcome}", 0.0))
                audio.add_metric([name], h["stats"].get("job_audio_seconds", 0.0))
            yield alive
            yield run
            yield done
            yield audio

    metrics.registry.register(Collector())


# ------------------------------------------------------------------------------------------- the worker
_SPEC: Optional[JobSpec] = None
_SETTINGS = None


class JobContext:
    """Handed to `JobSpec.run` in the worker: progress and cancellation, with the engines' Job interface
    (`check()` between segments/windows raises JobStopped once the job is canceled)."""

    def __init__(self, job, conn, total_seconds: Optional[float] = None):
        self.job, self.conn = job, conn
        self.total = total_seconds
        self._last_progress = 0.0
        self._last_check = 0.0
        self.reason: Optional[str] = None
        self.attempt = uuid.uuid4().hex   # what claim_finish records for this run of the job

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def _superseded(self) -> None:
        """Never write over the status of a job that another attempt finished (this worker was cut off)."""
        winner = self.conn.get(finished_key(self.job.id))
        if winner is not None and winner.decode() != self.attempt:
            self.reason = "superseded"
            raise JobStopped(self.reason)

    def set_total(self, seconds: float) -> None:
        self.total = seconds
        self._superseded()
        self.job.meta["seconds_total"] = round(seconds, 2)
        self.job.save_meta()

    def progress(self, seconds_done: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._superseded()
            self.job.meta["seconds_done"] = round(float(seconds_done), 2)
            self.job.save_meta()

    def check(self) -> None:
        now = time.monotonic()
        if now - self._last_check >= 0.5:
            self._last_check = now
            if self.conn.exists(cancel_key(self.job.id)):
                self.reason = "canceled"
            else:
                winner = self.conn.get(finished_key(self.job.id))
                if winner is not None and winner.decode() != self.attempt:
                    self.reason = "superseded"
        if self.reason:
            raise JobStopped(self.reason)


def _stat(conn, name: str, amount: float = 1.0) -> None:
    try:
        conn.hincrbyfloat(stats_key(_SPEC.service), name, amount)
        if _SETTINGS is not None and name != "webhook_failures":
            conn.hincrbyfloat(worker_stats_key(_SPEC.service), f"{worker_name(_SETTINGS)}|{name}", amount)
    except Exception:  # noqa: BLE001
        pass


def fetch_audio(settings, job, folder: str) -> str:
    """A worker on another host: the job's audio from the front over the link (its token, our certificate)."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, "audio")
    url = f"{settings.jobs_fetch_url.rstrip('/')}/internal/jobs/{job.id}/audio"
    req = urllib.request.Request(url, headers={"X-Job-Token": job.meta.get("audio_token") or "",
                                               "User-Agent": "whisper-platform-worker"})
    with urllib.request.urlopen(req, timeout=60, context=link_ssl_context(settings)) as r, \
            open(path + ".part", "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    os.replace(path + ".part", path)
    return path


def claim_finish(conn, job, settings, attempt: str) -> bool:
    """The first attempt to finish a job wins; a late one (its worker was cut off and the job ran elsewhere)
    drops what it has, so the client sees one outcome and one webhook."""
    return bool(conn.set(finished_key(job.id), attempt, nx=True, ex=int(settings.job_ttl)))


def execute() -> dict:
    """The RQ job function (runs in the worker): one transcription, its result stored beside the audio."""
    from rq import get_current_job

    job = get_current_job()
    conn = job.connection
    spec, settings = _SPEC, _SETTINGS
    folder = os.path.join(settings.jobs_dir, job.id)
    remote = bool(settings.jobs_fetch_url)   # a worker host: the audio comes over the link, the result goes to Redis
    if conn.exists(finished_key(job.id)):   # an attempt elsewhere already finished it
        return {"state": "duplicate"}
    job.meta.update(attempts=int(job.meta.get("attempts", 0)) + 1, worker=worker_name(settings),
                    seconds_done=0.0, error=None)
    job.save_meta()
    ctx = JobContext(job, conn)
    t0 = time.monotonic()
    outcome, error = "succeeded", None
    try:
        try:
            if conn.exists(cancel_key(job.id)):
                raise JobStopped("canceled")
            audio = fetch_audio(settings, job, folder) if remote else os.path.join(folder, "audio")
            result = spec.run(audio, job.meta.get("params") or {}, ctx)
            if remote:
                conn.set(result_key(job.id), json.dumps(result, ensure_ascii=False), ex=int(settings.job_ttl))
            else:
                tmp = os.path.join(folder, "result.json.part")
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(result, f, ensure_ascii=False)
                os.replace(tmp, os.path.join(folder, "result.json"))
        finally:
            if remote:   # the worker host keeps no copy of anyone's audio
                shutil.rmtree(folder, ignore_errors=True)
        if not claim_finish(conn, job, settings, ctx.attempt):
            log.warning("job %s was finished elsewhere meanwhile: this late result is dropped", job.id)
            return {"state": "duplicate"}
        _stat(conn, "job_audio_seconds", float(result.get("duration") or 0.0))
        ctx.progress(ctx.total or result.get("duration") or 0.0, force=True)
    except JobStopped:
        outcome = "canceled"
    except APIError as e:  # the input's fault (undecodable audio, too long, ...): retrying cannot help
        outcome, error = "failed", e.body()["error"]
    except Exception as e:  # noqa: BLE001
        # a crash: RQ retries it while retries are left; the webhook and state only for the last attempt
        last = not job.retries_left
        if last and claim_finish(conn, job, settings, ctx.attempt):
            job.meta.update(state="failed", finished_at=_iso_now(),
                            error=failed_error(int(job.meta.get("attempts") or 1),
                                               f"the last attempt raised {type(e).__name__}"))
            job.save_meta()
            _finish(job, conn, "failed", time.monotonic() - t0)
        raise
    if outcome != "succeeded" and not claim_finish(conn, job, settings, ctx.attempt):
        return {"state": "duplicate"}
    job.meta.update(state=outcome, finished_at=_iso_now(), error=error)
    job.save_meta()
    if outcome == "canceled":
        conn.delete(cancel_key(job.id))
        shutil.rmtree(folder, ignore_errors=True)
    _finish(job, conn, outcome, time.monotonic() - t0)
    return {"state": outcome}


def on_failure(job, connection, exc_type=None, exc_value=None, traceback=None) -> None:
    """RQ's failure callback. Acts on the last attempt of a job whose worker died (RQ calls it with an
    AbandonedJobError from the maintenance of the worker that found the job abandoned, before it records the
    failure): that attempt never reached execute's own handler, so the job's state, its error (how many times it
    failed) and its webhook are set here. A crash inside `execute` has already recorded its own (and claimed the
    job); a job with retries left goes back to its queue after its back-off."""
    from rq.exceptions import AbandonedJobError

    if job.retries_left or _SETTINGS is None:
        return
    if not (exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError)):
        return
    if not claim_finish(connection, job, _SETTINGS, uuid.uuid4().hex):
        return
    attempts = int(job.meta.get("attempts") or 1)
    log.warning("job %s: its worker stopped during its last attempt (%d in all): failed", job.id, attempts)
    job.meta.update(state="failed", finished_at=_iso_now(),
                    error=failed_error(attempts, "the worker running its last attempt stopped (killed, out of "
                                                 "memory, or its host went down)"))
    job.save_meta()
    _finish(job, connection, "failed", 0.0)


def _finish(job, conn, outcome: str, seconds: float) -> None:
    _stat(conn, f"jobs_{outcome}")
    _stat(conn, "job_seconds", seconds)
    url = job.meta.get("callback_url")
    if url:
        payload = {"id": job.id, "object": "transcription.job", "status": outcome,
                   "result_url": f"/v1/jobs/{job.id}/result" if outcome == "succeeded" else None,
                   "error": job.meta.get("error")}
        # a worker host has no webhook secret (it stays on the front): the front's worker delivers
        if not _SETTINGS.webhook_secret or not deliver_webhook(url, payload, raise_on_failure=False):
            from rq import Queue, Retry
            Queue(webhook_queue_name(_SPEC.service), connection=conn).enqueue(
                "stt_common.jobs.deliver_webhook", url, payload,
                retry=Retry(max=len(WEBHOOK_RETRY_INTERVALS), interval=WEBHOOK_RETRY_INTERVALS),
                result_ttl=3600, failure_ttl=int(_SETTINGS.job_ttl))


def deliver_webhook(url: str, payload: dict, raise_on_failure: bool = True) -> bool:
    """POST the signed payload; any 2xx is delivered. The retries are RQ's (interval list above)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "whisper-platform-webhook",
               SIGNATURE_HEADER: sign(_SETTINGS.webhook_secret, int(time.time()), body)}
    try:
        check_callback_url(url, _SETTINGS.webhook_allow_private)
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                    timeout=10) as r:
            ok = 200 <= r.status < 300
    except (urllib.error.URLError, OSError, APIError, ValueError) as e:
        log.warning("webhook to %s failed: %s", urlsplit(url).hostname, getattr(e, "message", e))
        ok = False
    if not ok:
        from rq import get_current_job
        job = get_current_job()
        if job is not None:
            _stat(job.connection, "webhook_failures")
        if raise_on_failure:
            raise RuntimeError("webhook delivery failed")
    return ok


def sweep_files(conn, settings, service: str) -> int:
    """Delete job folders past the retention time whose job is not queued or running."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    removed = 0
    cutoff = time.time() - settings.job_ttl
    try:
        names = os.listdir(settings.jobs_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(settings.jobs_dir, name)
        try:
            if os.stat(path).st_mtime > cutoff:
                continue
            try:
                if job_state(RQJob.fetch(name, connection=conn)) in ("queued", "running"):
                    continue
            except NoSuchJobError:
                pass
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except (FileNotFoundError, ValueError):
            continue
    return removed


def run_worker(spec: JobSpec, settings, burst: bool = False) -> None:
    """A worker for one service: keeps its model loaded, listens to the webhook queue first, then jobs."""
    global _SPEC, _SETTINGS
    from rq import Queue
    from rq.worker import SimpleWorker

    _SPEC, _SETTINGS = spec, settings
    if not settings.redis_url:
        raise SystemExit("STT_REDIS_URL is empty: a job worker needs Redis.")
    conn = redis_connection(settings)
    for attempt in range(60):   # Redis may still be starting (a host boot, a restart after a settings change)
        try:
            conn.ping()
            break
        except Exception as e:  # noqa: BLE001
            if attempt == 59:
                raise SystemExit(f"Redis at STT_REDIS_URL does not answer: {type(e).__name__}: {e}")
            time.sleep(1)
    os.makedirs(settings.jobs_dir, exist_ok=True)
    if spec.warm:
        spec.warm()

    ttl = max(2, int(settings.job_heartbeat_ttl))
    every = max(0.5, ttl / 4)

    class ModelWorker(SimpleWorker):
        """Runs jobs in its own process (the model stays loaded) with a heartbeat thread, so that a job whose
        worker died is found abandoned within STT_JOB_HEARTBEAT_TTL, not after the job's whole time limit."""

        def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
            return ttl

        def execute_job(self, job, queue):
            execution = self.prepare_execution(job)
            stop = threading.Event()

            def beat():
                while not stop.wait(every):
                    try:
                        with self.connection.pipeline() as p:
                            self.heartbeat(ttl, pipeline=p)
                            execution.heartbeat(job.started_job_registry, ttl, p)
                            p.execute()
                    except Exception as e:  # noqa: BLE001 - the next beat tries again
                        log.warning("heartbeat failed: %s", e)

            t = threading.Thread(target=beat, name="job-heartbeat", daemon=True)
            t.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                stop.set()
                t.join()
            from rq.worker import WorkerStatus
            self.set_state(WorkerStatus.IDLE)

        def _start_scheduler(self, burst=False, logging_level="INFO", date_format=None, log_format=None):
            """RQ's, with the scheduler named after this worker, so that another worker can tell that the
            scheduler holding a queue's lock is gone with its worker (_take_over_scheduler_locks)."""
            from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
            from rq.scheduler import RQScheduler

            self.scheduler = RQScheduler(self.queues, connection=self.connection, logging_level=logging_level,
                                         date_format=date_format or DEFAULT_LOGGING_DATE_FORMAT,
                                         log_format=log_format or DEFAULT_LOGGING_FORMAT,
                                         serializer=self.serializer, name=self.name)
            self.scheduler.acquire_locks()
            if self.scheduler.acquired_locks:
                if burst:
                    try:
                        self.scheduler.register_birth()
                        self.scheduler.enqueue_scheduled_jobs()
                    finally:
                        self.scheduler.release_locks()
                        self.scheduler.register_death()
                else:
                    self.scheduler.start()

        def _take_over_scheduler_locks(self) -> bool:
            """Drop a queue's scheduler lock whose worker is no longer registered (killed with its scheduler,
            host down): RQ's maintenance below then starts our scheduler, so retries due run on time instead of
            after the lock's 61 s. True when one was dropped."""
            from rq.scheduler import RQScheduler
            from rq.scripts import release_lock

            dropped = False
            for q in self.queues:
                key = RQScheduler.get_locking_key(q.name)
                holder = self.connection.get(key)
                if holder is None:
                    continue
                holder = holder.decode()
                if holder == self.name or self.connection.exists(self.redis_worker_namespace_prefix + holder):
                    continue
                if release_lock(self.connection, key, holder):
                    dropped = True
                    log.info("worker %s: the scheduler of %s is gone with its worker %s: taking it over",
                             self.name, q.name, holder)
            return dropped

        def run_maintenance_tasks(self):
            try:
                if self._take_over_scheduler_locks() and self.scheduler is not None \
                        and self.scheduler._process is not None and self.scheduler._process.is_alive():
                    # our scheduler runs with the other queues' locks only and would look for more after
                    # 120 s: stopped (it releases its locks), RQ's maintenance below starts it with all of them
                    self.stop_scheduler()
            except Exception as e:  # noqa: BLE001
                log.warning("checking the scheduler locks failed: %s", e)
            # back after Redis was out of reach longer than the worker's TTL (a worker host cut off, Redis
            # restarted): RQ reconnects but its registration has expired; register again so it is seen
            try:
                if not self.connection.exists(self.key):
                    log.info("worker %s: registration expired while Redis was out of reach: registering again",
                             self.name)
                    self.register_birth()
            except Exception as e:  # noqa: BLE001
                log.warning("re-registering the worker failed: %s", e)
            super().run_maintenance_tasks()
            try:
                sweep_files(self.connection, settings, spec.service)
            except Exception as e:  # noqa: BLE001
                log.warning("sweeping expired job files failed: %s", e)

    queues = [Queue(webhook_queue_name(spec.service), connection=conn),
              Queue(queue_name(spec.service), connection=conn)]
    if settings.jobs_fetch_url or not settings.webhook_secret:
        queues = queues[1:]   # a worker host: webhooks are signed and sent by the front's worker
    # maintenance runs between waits for the next job: the wait (worker_ttl - 15) must not outlast its interval
    maintenance = max(1, ttl // 2)
    worker = ModelWorker(queues, connection=conn, maintenance_interval=maintenance, worker_ttl=maintenance + 15,
                         name=f"{worker_name(settings)}/{uuid.uuid4().hex[:8]}")
    log.info("worker %s listening on %s", worker.name, ", ".join(q.name for q in queues))
    worker.work(burst=burst, with_scheduler=True, logging_level=os.environ.get("LOG_LEVEL", "INFO").upper())
