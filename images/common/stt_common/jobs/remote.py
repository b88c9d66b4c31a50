"""A worker host's job loop: no Redis, no RQ; the front's link interface only (link.py).

Each worker process is one slot: it asks the front for a job (a long poll with a ticket it keeps until it gets an
answer), fetches the job's audio into its own tmpfs, runs the service's `JobSpec.run` with a context that reports
progress and beats to the front (and learns from the answer when to stop), then hands in the result or the
failure, and drops its copy of the audio. The front checks everything it sends (link.py); the worker host holds
its own token and TLS key and nothing that opens another host's or another job's data."""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import ssl
import threading
import time
import uuid
from typing import Optional, cast
from urllib.parse import urlsplit

from ..errors import APIError
from ..executor import JobStopped
from .connection import link_ssl_context, worker_name
from .link import CLAIM_GRACE_S, NEXT_WAIT_S
from .spec import PROGRESS_EVERY_S, JobSpec, RunContext

log = logging.getLogger("stt_common.jobs")


class LinkUnavailable(Exception):
    """The front does not answer (restarting, stopped while idle, cut off): ask again after a pause."""


class LeaseGone(Exception):
    """The front ended this job's lease (canceled, finished elsewhere, taken back): drop the job."""


class LinkClient:
    """The calls a worker host makes, to STT_JOBS_FRONT_URL (https://<front link address>:<port>/<service>)."""

    def __init__(self, base_url: str, token: str, context: Optional[ssl.SSLContext], slot: str):
        parts = urlsplit(base_url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.token, self.context, self.slot = token, context, slot

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        host = cast(str, self.host)   # as parsed from the link's URL; http.client refuses a missing one
        if self.scheme == "https":
            return http.client.HTTPSConnection(host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(host, self.port, timeout=timeout)

    def call(self, method: str, path: str, body=None, timeout: float = 30.0, sink=None,
             max_bytes: int = 0) -> tuple[int, bytes]:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "whisper-platform-worker",
                   "Content-Type": "application/json"}
        conn = self._conn(timeout)
        try:
            conn.request(method, self.prefix + path, body=data if method != "GET" else None, headers=headers)
            r = conn.getresponse()
            if r.status in (502, 503, 504):
                raise LinkUnavailable(f"the front answered {r.status}")
            if sink is not None and r.status == 200:
                written = 0
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    written += len(chunk)
                    if max_bytes and written > max_bytes:
                        raise LinkUnavailable("the audio is larger than this host accepts")
                    sink.write(chunk)
                return r.status, b""
            return r.status, r.read(1 << 20)
        except (OSError, http.client.HTTPException) as e:
            raise LinkUnavailable(f"{type(e).__name__}: {e}") from None
        finally:
            conn.close()

    def next(self, ticket: str) -> Optional[dict]:
        status, data = self.call("POST", "/internal/link/next", {"ticket": ticket, "slot": self.slot},
                                 timeout=NEXT_WAIT_S + CLAIM_GRACE_S + 20)
        if status == 204:
            return None
        if status != 200:
            raise LinkUnavailable(f"asking for a job: {status} {data[:200]!r}")
        return json.loads(data)

    def lease_call(self, lease: str, what: str, body=None, **kw) -> tuple[int, bytes]:
        status, data = self.call("GET" if what == "audio" else "POST", f"/internal/link/leases/{lease}/{what}",
                                 body, **kw)
        if status in (404, 410):
            raise LeaseGone(f"{what}: {status}")
        return status, data


class RemoteContext:
    """The RunContext JobSpec.run gets on a worker host: progress and beats go to the front, whose answer says when
    to stop (canceled, finished elsewhere, or the host shutting down)."""

    def __init__(self, client: LinkClient, lease: str, heartbeat_s: float,
                 stopping: Optional[threading.Event] = None):
        self.client, self.lease, self.stopping = client, lease, stopping
        self.total: Optional[float] = None
        self.done = 0.0
        self.reason: Optional[str] = None
        self.every = max(0.5, min(PROGRESS_EVERY_S, heartbeat_s / 4))
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="link-beat", daemon=True)

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def start(self) -> "RemoteContext":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def report(self) -> None:
        try:
            status, data = self.client.lease_call(self.lease, "progress",
                                                  {"seconds_done": self.done, "seconds_total": self.total},
                                                  timeout=15)
            if status == 200:
                stop = json.loads(data).get("stop")
                if stop and not self.reason:
                    self.reason = stop
        except LeaseGone:
            self.reason = self.reason or "superseded"
        except LinkUnavailable as e:   # the next beat tries again; the front gives up after its heartbeat TTL
            log.warning("progress to the front failed: %s", e)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.report()

    def set_total(self, seconds: float) -> None:
        self.total = float(seconds)

    def progress(self, seconds_done: float, force: bool = False) -> None:
        self.done = float(seconds_done)
        if force:
            self.report()
        self.check()

    def check(self) -> None:
        if self.stopping is not None and self.stopping.is_set() and not self.reason:
            self.reason = "shutdown"
        if self.reason:
            raise JobStopped(self.reason)


def run_assignment(client: LinkClient, spec: JobSpec[RunContext], settings, a: dict, stopping: threading.Event) -> str:
    """One job from the front, start to end. Returns its outcome as this host saw it."""
    lease, job_id = a["lease"], a["job_id"]
    folder = os.path.join(settings.jobs_dir, job_id if all(c in "0123456789abcdef" for c in job_id) else lease)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    ctx = RemoteContext(client, lease, float(a.get("heartbeat_s") or 60), stopping).start()
    try:
        path = os.path.join(folder, "audio")
        with open(path, "wb") as sink:
            status, _ = client.lease_call(lease, "audio", sink=sink, timeout=600,
                                          max_bytes=int(settings.max_upload_bytes) + (1 << 20))
        if status != 200:
            raise LinkUnavailable(f"the audio: {status}")
        result = spec.run(path, a.get("params") or {}, ctx)
        ctx.close()
        status, data = client.lease_call(lease, "result", json.dumps(result, ensure_ascii=False).encode(),
                                         timeout=300)
        if status != 200:
            log.error("job %s: the front refused the result: %s %s", job_id, status, data[:300])
            client.lease_call(lease, "failure", {"kind": "crash", "error": {"message": f"result refused: {status}"}})
            return "refused"
        return "succeeded"
    except JobStopped as e:
        if ctx.reason == "shutdown":   # given back at once, to the head of its queue, without using a retry
            _failure(client, lease, "shutdown", {"message": "the worker host stopped"})
        return f"stopped ({e.args[0] if e.args else ''})"
    except LeaseGone:
        return "taken back"
    except APIError as e:   # the input's fault: the job fails with this error, no retry
        _failure(client, lease, "input", {**e.body()["error"], "status": e.status})
        return "failed"
    except Exception as e:  # noqa: BLE001 - a crash: the front retries the job (elsewhere too)
        log.exception("job %s crashed", job_id)
        _failure(client, lease, "crash", {"message": f"{type(e).__name__}: {str(e)[:200]}"})
        return "crashed"
    finally:
        ctx.close()
        shutil.rmtree(folder, ignore_errors=True)


def _failure(client: LinkClient, lease: str, kind: str, error: dict) -> None:
    try:
        client.lease_call(lease, "failure", {"kind": kind, "error": error}, timeout=30)
    except (LeaseGone, LinkUnavailable) as e:
        log.warning("reporting the failure to the front failed: %s", e)


def run_remote_worker(spec: JobSpec[RunContext], settings, burst: bool = False) -> None:
    """A worker host's slot: ask for jobs and run them until SIGTERM (or, with `burst`, until none is waiting)."""
    if not settings.link_token:
        raise SystemExit("STT_JOBS_FRONT_URL is set but STT_LINK_TOKEN is empty: a worker host needs its token.")
    context = link_ssl_context(settings) if settings.jobs_front_url.startswith("https://") else None
    slot = f"{worker_name(settings)}/{uuid.uuid4().hex[:8]}"
    client = LinkClient(settings.jobs_front_url, settings.link_token, context, slot.rsplit("/", 1)[1])
    os.makedirs(settings.jobs_dir, exist_ok=True)
    if spec.warm:
        spec.warm()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    signal.signal(signal.SIGINT, lambda *a: stopping.set())
    log.info("worker %s taking %s jobs from %s", slot, spec.service, settings.jobs_front_url)
    pause = 1.0
    ticket = uuid.uuid4().hex
    while not stopping.is_set():
        try:
            a = client.next(ticket)
            pause = 1.0
        except LinkUnavailable as e:
            log.warning("the front is not reachable (%s): asking again in %.0f s", e, pause)
            stopping.wait(pause)
            pause = min(30.0, pause * 2)
            continue
        ticket = uuid.uuid4().hex   # answered: the next request is a new one
        if a is None:
            if burst:
                return
            continue
        t0 = time.monotonic()
        outcome = run_assignment(client, spec, settings, a, stopping)
        log.info("job %s: %s in %.1f s", a.get("job_id"), outcome, time.monotonic() - t0)
