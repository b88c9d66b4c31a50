"""Quotas on submission: per caller, jobs queued or running and bytes stored; per service, the queue's length and
the bytes its jobs keep in jobs_dir. Over a limit: 429 in OpenAI's shape with Retry-After (`QuotaExceeded`).

The counts live in Redis beside the jobs (keys.py: active_key, stored_key, usage_key) and change only in the same
transaction as the job they count:
- `admit` checks the limits and enqueues in ONE optimistic transaction (WATCH on the counts, then MULTI: the job,
  its queue entry, the caller's index and the counts). Either all of it exists or none of it: a job is listed for
  its owner or it does not exist, and two submissions racing for the last place cannot both take it;
- a job leaves the active counts when it ends (`finished`: execution, cancel, failure callback); entries of jobs
  that ended without passing there (expired in the queue, deleted by hand) are pruned by the next submission that
  finds its caller at the limit, from RQ's own status of each job;
- bytes: the audio at submission, the result when it is stored (`add_bytes`); released with the files
  (`release`: cancel, delete, the sweep of expired jobs), by Lua scripts so that the totals never drift from the
  per-job records.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from ..errors import APIError, unavailable
from .keys import active_key, stored_key, usage_key

ACTIVE_STATES = {b"queued", b"started", b"scheduled", b"deferred"}
RETRY_AFTER_JOBS = 30       # s: a caller or the queue at its limit waits for jobs to end
RETRY_AFTER_BYTES = 600     # s: stored bytes go when jobs expire (or at once with DELETE /v1/jobs/<id>)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """0 = no limit."""

    caller_jobs: int = 0        # queued + running, per caller
    caller_bytes: int = 0       # audio and results kept, per caller
    service_jobs: int = 0       # queued + running, all callers: the queue's length
    service_bytes: int = 0      # audio and results kept in jobs_dir, all callers

    @classmethod
    def from_settings(cls, s) -> "Limits":
        return cls(caller_jobs=int(s.job_quota_jobs), caller_bytes=int(s.job_quota_mb * MIB),
                   service_jobs=int(s.jobs_max_queued), service_bytes=int(s.jobs_max_stored_mb * MIB))


class QuotaExceeded(APIError):
    def __init__(self, message: str, code: str, retry_after: int):
        super().__init__(429, message, type="rate_limit_error", code=code, headers={"Retry-After": str(retry_after)})


def _mib(n: int) -> str:
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n} bytes"


def check(limits: Limits, caller_jobs: int, all_jobs: int, caller_bytes: int, all_bytes: int, size: int = 0) -> None:
    """Raise QuotaExceeded when one more job of `size` bytes would pass a limit."""
    if limits.caller_jobs and caller_jobs >= limits.caller_jobs:
        raise QuotaExceeded(f"You have {caller_jobs} jobs queued or running, the most this server takes per caller "
                            f"({limits.caller_jobs}): submit more once some have finished.", "too_many_jobs",
                            RETRY_AFTER_JOBS)
    if limits.service_jobs and all_jobs >= limits.service_jobs:
        raise QuotaExceeded(f"The job queue is full ({limits.service_jobs} jobs queued or running): retry later.",
                            "queue_full", RETRY_AFTER_JOBS)
    if limits.caller_bytes and caller_bytes + size > limits.caller_bytes:
        raise QuotaExceeded(f"Your jobs keep {_mib(caller_bytes)} of audio and results; with this upload "
                            f"({_mib(size)}) that would pass your quota of {_mib(limits.caller_bytes)}. Delete "
                            "finished jobs (DELETE /v1/jobs/<id>) or wait until they expire.", "storage_quota_exceeded",
                            RETRY_AFTER_BYTES)
    if limits.service_bytes and all_bytes + size > limits.service_bytes:
        raise QuotaExceeded(f"This server's storage for jobs is at its limit ({_mib(limits.service_bytes)}): retry "
                            "later.", "storage_full", RETRY_AFTER_BYTES)


def _counts(conn, service: str, owner: str) -> tuple[int, int, int, int]:
    usage = usage_key(service)
    a, b, c, d = (conn.zcard(active_key(service, owner)), conn.zcard(active_key(service)),
                  conn.hget(usage, owner), conn.hget(usage, "*"))
    return int(a), int(b), int(c or 0), int(d or 0)


def prune(conn, service: str, key: str) -> int:
    """Drop the entries of an active set whose job has ended or vanished (RQ's status of each job)."""
    ids = conn.zrange(key, 0, -1)
    if not ids:
        return 0
    with conn.pipeline(transaction=False) as p:
        for job_id in ids:
            p.hget(b"rq:job:" + job_id, "status")
        statuses = p.execute()
    gone = [job_id for job_id, status in zip(ids, statuses) if status not in ACTIVE_STATES]
    if gone:
        conn.zrem(key, *gone)
    return len(gone)


def precheck(conn, service: str, owner: str, limits: Limits, size: int = 0) -> None:
    """Before an upload is read: refuse at once when the caller or the service is already at a limit (stale
    entries pruned first)."""
    counts = _counts(conn, service, owner)
    if limits.caller_jobs and counts[0] >= limits.caller_jobs:
        prune(conn, service, active_key(service, owner))
    if limits.service_jobs and counts[1] >= limits.service_jobs:
        prune(conn, service, active_key(service))
    check(limits, *_counts(conn, service, owner), size=size)


def admit(conn, service: str, owner: str, job_id: str, size: int, limits: Limits, ttl: int,
          enqueue: Callable) -> None:
    """Check the limits and enqueue in one transaction: `enqueue(pipeline)` adds the job's own writes (the job,
    its queue entry, the caller's index) to the transaction, then the counts follow; EXEC runs all or nothing."""
    from redis.exceptions import WatchError

    keys = (active_key(service, owner), active_key(service), usage_key(service))
    with conn.pipeline() as p:
        for _ in range(20):
            try:
                p.watch(*keys)
                check(limits, *_counts(p, service, owner), size=size)
                p.multi()
                enqueue(p)
                now = time.time()
                p.zadd(keys[0], {job_id: now})
                p.expire(keys[0], ttl)
                p.zadd(keys[1], {job_id: now})
                p.hset(stored_key(service), job_id, f"{owner} {size}")
                p.hincrby(keys[2], owner, size)
                p.hincrby(keys[2], "*", size)
                p.execute()
                return
            except WatchError:
                continue
    raise unavailable("Too many submissions at once for the job queue: retry in a moment.", 1, code="busy")


def finished(conn, service: str, owner: Optional[str], job_id: str) -> None:
    """A job ended (or was canceled while queued): it no longer counts as queued or running."""
    with conn.pipeline(transaction=False) as p:
        if owner:
            p.zrem(active_key(service, owner), job_id)
        p.zrem(active_key(service), job_id)
        p.execute()


_RELEASE = """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local owner, bytes = string.match(rec, '^(%S+) (%d+)$')
redis.call('HDEL', KEYS[1], ARGV[1])
if not owner then return 0 end
bytes = tonumber(bytes)
if redis.call('HINCRBY', KEYS[2], owner, -bytes) <= 0 then redis.call('HDEL', KEYS[2], owner) end
if redis.call('HINCRBY', KEYS[2], '*', -bytes) <= 0 then redis.call('HDEL', KEYS[2], '*') end
return bytes
"""

_ADD = """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local owner, bytes = string.match(rec, '^(%S+) (%d+)$')
if not owner then return 0 end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], owner .. ' ' .. (tonumber(bytes) + n))
redis.call('HINCRBY', KEYS[2], owner, n)
redis.call('HINCRBY', KEYS[2], '*', n)
return n
"""


def release(conn, service: str, job_id: str) -> int:
    """A job's files are gone: its bytes leave the caller's and the service's totals. Returns the bytes."""
    return int(conn.eval(_RELEASE, 2, stored_key(service), usage_key(service), job_id) or 0)


def check_bytes(conn, service: str, owner: Optional[str], limits: Limits, size: int) -> None:
    """Bytes that arrive after the submission (audio by URL, downloaded by the job's worker): QuotaExceeded when
    they would pass the caller's or the service's byte quota (the job counts are not checked again)."""
    _, _, caller_bytes, all_bytes = _counts(conn, service, owner or "anonymous")
    check(replace(limits, caller_jobs=0, service_jobs=0), 0, 0, caller_bytes, all_bytes, size)


def add_bytes(conn, service: str, job_id: str, n: int) -> None:
    """A job's result was stored beside its audio."""
    if n:
        conn.eval(_ADD, 2, stored_key(service), usage_key(service), job_id, int(n))


def stored_jobs(conn, service: str) -> set:
    """The ids of every job whose files are counted (the sweep compares them with the folders)."""
    return {k.decode() for k in conn.hkeys(stored_key(service))}


def usage(conn, service: str, owner: str) -> dict:
    a, b, c, d = _counts(conn, service, owner)
    return {"jobs": a, "bytes": c, "service_jobs": b, "service_bytes": d}
