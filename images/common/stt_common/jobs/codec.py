"""How jobs are kept in Redis: as JSON, naming only functions of an allow-list.

RQ stores a job's call (function path, arguments) and its `meta` with a serializer, pickle by default: whoever
can write a job's hash in Redis then runs code in every process that reads it (an API status call unpickles
`meta`). Here every job is written and read with RQ's `JSONSerializer` (`StoredJob`, the queues of `queue()`),
so what Redis holds is data, never code; and the functions a worker runs are looked up in `ALLOWED` by name,
never imported from a path found in Redis (a job or callback naming anything else fails without running).

Jobs queued before this change were pickled: `convert_legacy_jobs` turns them into JSON once, at the worker's
start, with an unpickler that builds plain data only (dict, list, str, numbers, None: it refuses every class and
function, so a planted payload is refused, not run). Their webhook deliveries, which were RQ jobs, become
delivery records (webhooks.py).
"""
from __future__ import annotations

import json
import logging
import pickle
import zlib
from typing import Callable, Iterable, Optional, cast

from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from .keys import DELIVER_WEBHOOK, EXECUTE, ON_FAILURE

log = logging.getLogger("stt_common.jobs")

SERIALIZER = JSONSerializer


class DisallowedFunction(Exception):
    """A job names a function outside the allow-list: it is failed, never run."""


def _execution(name: str) -> Callable:
    def resolve():
        from . import execution
        return getattr(execution, name)
    return resolve


# the functions a job may name (RQ's func_name, failure_callback_name): resolved here, never imported by path
ALLOWED: dict[str, Callable[[], Callable]] = {
    EXECUTE: _execution("execute"),
    ON_FAILURE: _execution("on_failure"),
}


def allowed_function(name: Optional[str]) -> Callable:
    resolve = ALLOWED.get(name or "")
    if resolve is None:
        raise DisallowedFunction(f"a job names {str(name)[:100]!r}, which is not one of this service's job "
                                 f"functions ({', '.join(sorted(ALLOWED))}): refused")
    return resolve()


class StoredJob(Job):
    """RQ's Job, stored as JSON, whose function and callbacks come from the allow-list only."""

    def __init__(self, id=None, connection=None, serializer=None):
        super().__init__(id, connection=connection, serializer=SERIALIZER)

    @property
    def func(self):
        if not self.runnable:
            raise DisallowedFunction(f"job {self.id} is not one this service runs (its function or callbacks are "
                                     "not allowed, or its data is not JSON): refused")
        return allowed_function(self.func_name)

    @property
    def failure_callback(self):
        name = self._failure_callback_name
        return allowed_function(name) if name else None

    @property
    def success_callback(self):
        if self._success_callback_name:
            raise DisallowedFunction("a job names a success callback: refused")
        return None

    @property
    def stopped_callback(self):
        if self._stopped_callback_name:
            raise DisallowedFunction("a job names a stopped callback: refused")
        return None

    @property
    def runnable(self) -> bool:
        """Whether a worker may run this job: its data and meta are JSON, its function and callbacks allowed."""
        try:
            return self.func_name in ALLOWED and self.instance is None and self._unreadable_meta is None \
                and (self._failure_callback_name or ON_FAILURE) in ALLOWED \
                and not self._success_callback_name and not self._stopped_callback_name
        except Exception:  # noqa: BLE001 - unreadable data (not JSON): not runnable
            return False


def queue(conn, name: str, timeout: Optional[int] = None) -> Queue:
    return Queue(name, connection=conn, job_class=StoredJob, serializer=SERIALIZER, default_timeout=timeout)


def fetch(conn, job_id: str) -> StoredJob:
    return cast(StoredJob, StoredJob.fetch(job_id, connection=conn, serializer=SERIALIZER))   # rq builds cls(...)


def fetch_many(conn, ids: Iterable[str]) -> list:
    return StoredJob.fetch_many(list(ids), connection=conn, serializer=SERIALIZER)


# ------------------------------------------------------------------ jobs pickled before the change
class _PlainData(pickle.Unpickler):
    """Builds only what pickle makes without a global: no class, no function, nothing that runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def plain_loads(data: bytes):
    import io
    return _PlainData(io.BytesIO(data)).load()


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"))
        return True
    except (UnicodeDecodeError, ValueError):
        return False


def _convert_hash(conn, key: str) -> str:
    """One job hash: its `data` and `meta` as JSON. 'json' (already), 'converted', or 'refused' (left unreadable:
    the worker fails it without running it)."""
    fields = conn.hmget(key, "data", "meta")
    data, meta = fields
    if data is None:
        return "missing"
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        raw = data
    updates = {}
    try:
        if not _is_json(raw):
            func, instance, args, kwargs = plain_loads(raw)
            updates["data"] = zlib.compress(json.dumps([func, instance, list(args), kwargs]).encode())
        if meta and not _is_json(meta):
            updates["meta"] = json.dumps(plain_loads(meta)).encode()
    except Exception as e:  # noqa: BLE001 - a planted payload, or a type JSON cannot carry
        log.warning("job %s: its stored data is neither JSON nor plain pickled data (%s): left as it is, it "
                    "will not run", key.rsplit(":", 1)[-1], type(e).__name__)
        return "refused"
    if not updates:
        return "json"
    conn.hset(key, mapping=updates)
    return "converted"


def convert_legacy_jobs(conn, queue_names: Iterable[str]) -> dict:
    """Convert the pickled jobs of these queues (queued, scheduled, running, finished, failed) to JSON; counts by
    outcome. Idempotent: a second run finds JSON everywhere."""
    counts: dict = {}
    seen = set()
    for name in queue_names:
        ids = [i.decode() for i in conn.lrange(f"rq:queue:{name}", 0, -1)]
        for registry in ("wip", "scheduled", "finished", "failed", "deferred", "canceled"):
            ids += [m.decode().split(":", 1)[0] for m in conn.zrange(f"rq:{registry}:{name}", 0, -1)]
        for job_id in ids:
            if job_id in seen:
                continue
            seen.add(job_id)
            outcome = _convert_hash(conn, f"rq:job:{job_id}")
            counts[outcome] = counts.get(outcome, 0) + 1
    if counts.get("converted") or counts.get("refused"):
        log.info("jobs stored before JSON: %s", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return counts


def legacy_webhook_jobs(conn, queue_name: str) -> list:
    """The webhook deliveries that were RQ jobs (`deliver_webhook(url, payload)`) on this queue, read as plain data
    and removed from RQ: [(url, payload)]."""
    out = []
    ids = [i.decode() for i in conn.lrange(f"rq:queue:{queue_name}", 0, -1)]
    ids += [m.decode().split(":", 1)[0] for m in conn.zrange(f"rq:scheduled:{queue_name}", 0, -1)]
    for job_id in ids:
        data = conn.hget(f"rq:job:{job_id}", "data")
        if data is None:
            continue
        try:
            try:
                raw = zlib.decompress(data)
            except zlib.error:
                raw = data
            func, _, args, kwargs = json.loads(raw) if _is_json(raw) else plain_loads(raw)
            if func == DELIVER_WEBHOOK and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], dict):
                out.append((args[0], args[1]))
        except Exception as e:  # noqa: BLE001
            log.warning("legacy webhook job %s unreadable (%s): dropped", job_id, type(e).__name__)
        conn.delete(f"rq:job:{job_id}")
    conn.delete(f"rq:queue:{queue_name}", f"rq:scheduled:{queue_name}")
    return out
