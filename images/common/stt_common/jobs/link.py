"""The narrow interface between the front and its worker hosts: a worker host takes a job, fetches its audio,
reports progress and hands in a result or a failure, and can do nothing else. It has no Redis access at all.

Who is who:
- a worker host authenticates with its own token (`Authorization: Bearer <token>`; the front keeps only
  "<host> <sha256 of the token>" lines in STT_LINK_WORKERS_FILE, re-read when it changes, so that a host removed
  by a deploy is refused at once), on top of the link's TLS client certificate that nginx checks and pins;
- each job it takes is a LEASE: a random token bound to one job, one host and one attempt. Every call about a job
  names its lease; a lease of another host, or one that has ended, opens nothing.

How a job gets to a worker host (the relay: relay.py, RQ workers on the front that run each job by handing it
over):
1. a slot of the worker host asks for work: `POST /internal/link/next {"ticket", "slot"}` (ticket: a random id
   the slot keeps until it gets an answer, so a repeated request after a lost answer gets the same assignment);
   the front records the ticket as waiting and pushes it on the service's ticket list, then waits up to
   `NEXT_WAIT_S` for it to be assigned (long poll);
2. a relay pops the ticket, claims it, and only then takes a job from the RQ queue (a job is never taken for a
   slot that is not there); it creates the lease and writes the assignment into the ticket;
3. the front answers the slot with the assignment: the lease, the job's parameters and where its audio is;
4. the slot fetches the audio (`GET /internal/link/leases/<lease>/audio`), runs the job, and reports
   `POST .../progress` (also its heartbeat; the answer says whether to stop: canceled, or finished elsewhere),
   then `POST .../result` (checked: size, shape, and that it renders in every format) or `POST .../failure`;
5. the relay, which runs the job's `execute` on the front, sees the lease change and ends the job as a local
   worker would: the result beside the audio, the job's state, its webhook. A worker host whose beats stop for
   STT_JOB_HEARTBEAT_TTL has lost the job: the relay ends the attempt as a crash, and RQ retries it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from typing import Any, Optional

from ..dependencies import is_disk_full
from ..errors import APIError, not_found
from .keys import lease_key, ticket_key, ticket_signal_key, tickets_key

NEXT_WAIT_S = 20.0          # how long a slot's request for work waits for a job
CLAIM_GRACE_S = 8.0         # a ticket a relay claimed gets this much longer to be assigned
SEEN_TTL_S = 90             # a slot that has not asked for work for this long is gone (per_worker's count)
MAX_ERROR_MESSAGE = 500


def _seen_key(service: str) -> str:
    return f"stt:{service}:link:seen"


def gone(what: str = "lease") -> APIError:
    return APIError(410, f"This {what} has ended: drop the job.", code="lease_ended")


# ------------------------------------------------------------------ who is calling
class LinkAuth:
    """The worker hosts' token hashes, from STT_LINK_WORKERS_FILE (re-read when the file changes)."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: Optional[tuple] = None
        self._hashes: dict = {}
        self._lock = threading.Lock()

    def _load(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                hashes = {}
                with open(self.path, encoding="utf-8") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 2 and not line.startswith("#"):
                            hashes[parts[1].lower()] = parts[0]
                self._hashes, self._stamp = hashes, stamp
            return self._hashes

    def host(self, authorization: str) -> str:
        """The worker host a request's token belongs to, or 401."""
        token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
        if token:
            digest = hashlib.sha256(token.encode()).hexdigest()
            for known, host in self._load().items():
                if hmac.compare_digest(known, digest):
                    return host
        raise APIError(401, "Not a worker host of this front.", code="invalid_link_token",
                       headers={"WWW-Authenticate": "Bearer"})


# ------------------------------------------------------------------ tickets (the broker's side: the API)
_EXPIRE_IF_WAITING = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 'gone' end
local t = cjson.decode(raw)
if t.state == 'waiting' then redis.call('DEL', KEYS[1]) return 'expired' end
return t.state
"""


def next_assignment(conn, service: str, host: str, slot: str, ticket: str,
                    wait_s: float = NEXT_WAIT_S) -> Optional[dict]:
    """A worker host's slot asks for a job: its assignment, or None when none came within `wait_s`."""
    key, signal = ticket_key(ticket), ticket_signal_key(ticket)
    now = time.time()
    conn.hset(_seen_key(service), f"{host}|{slot}", now)
    raw = conn.get(key)
    if raw is not None:
        t = json.loads(raw)
        if t.get("host") != host:
            raise not_found("No such ticket.", code="ticket_not_found")
        if t.get("state") == "assigned":
            return t["assignment"]
    else:
        t = {"state": "waiting", "host": host, "slot": slot, "expires": now + wait_s}
        with conn.pipeline() as p:
            p.set(key, json.dumps(t), ex=int(wait_s + 300))
            p.lpush(tickets_key(service), ticket)
            p.expire(tickets_key(service), int(wait_s + 300))
            p.execute()
    deadline, extended = now + wait_s, False
    while True:
        left = deadline - time.time()
        if left > 0:
            conn.blpop([signal], timeout=max(0.1, left))
        raw = conn.get(key)
        if raw is None:
            return None
        t = json.loads(raw)
        if t.get("state") == "assigned":
            conn.delete(signal)
            return t["assignment"]
        if time.time() >= deadline:
            state = conn.eval(_EXPIRE_IF_WAITING, 1, key)
            state = state.decode() if isinstance(state, bytes) else state
            if state in ("expired", "gone"):
                return None
            if state == "claimed" and not extended:   # a relay is taking a job for it right now
                deadline, extended = time.time() + CLAIM_GRACE_S, True
                continue
            if state != "assigned":
                conn.delete(key)
                return None


def slots_seen(conn, service: str) -> dict:
    """Worker hosts and their slots that asked for work lately: {host: slots}."""
    out: dict[str, int]
    cutoff, out, stale = time.time() - SEEN_TTL_S, {}, []
    for field, value in conn.hgetall(_seen_key(service)).items():
        host, _, _slot = field.decode().rpartition("|")
        if float(value) < cutoff:
            stale.append(field)
        else:
            out[host] = out.get(host, 0) + 1
    if stale:
        conn.hdel(_seen_key(service), *stale)
    return out


# ------------------------------------------------------------------ tickets (the relay's side)
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local t = cjson.decode(raw)
if t.state ~= 'waiting' or tonumber(t.expires) < tonumber(ARGV[1]) then return false end
t.state = 'claimed'
t.relay = ARGV[2]
redis.call('SET', KEYS[1], cjson.encode(t), 'KEEPTTL')
return raw
"""

_RELEASE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local t = cjson.decode(raw)
if t.state ~= 'claimed' or t.relay ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[2], 'none')
redis.call('EXPIRE', KEYS[2], 60)
return 1
"""

_ASSIGN = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local t = cjson.decode(raw)
if t.state ~= 'claimed' or t.relay ~= ARGV[1] then return 0 end
t.state = 'assigned'
t.assignment = cjson.decode(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(t), 'EX', 600)
redis.call('RPUSH', KEYS[2], 'assigned')
redis.call('EXPIRE', KEYS[2], 60)
return 1
"""


def pop_ticket(conn, service: str, timeout: float) -> Optional[str]:
    got = conn.brpop([tickets_key(service)], timeout=max(0.1, timeout))
    return got[1].decode() if got else None


def claim_ticket(conn, ticket: str, relay: str, margin_s: float = 3.0) -> Optional[dict]:
    """The ticket for this relay, if it is still waiting with at least `margin_s` left: {host, slot, expires}."""
    raw = conn.eval(_CLAIM, 1, ticket_key(ticket), time.time() + margin_s, relay)
    return json.loads(raw) if raw else None


def release_ticket(conn, ticket: str, relay: str) -> None:
    """No job came: the slot's request for work ends without one."""
    conn.eval(_RELEASE, 2, ticket_key(ticket), ticket_signal_key(ticket), relay)


def assign_ticket(conn, ticket: str, relay: str, assignment: dict) -> bool:
    return bool(conn.eval(_ASSIGN, 2, ticket_key(ticket), ticket_signal_key(ticket), relay,
                          json.dumps(assignment)))


# ------------------------------------------------------------------ leases
def new_lease(conn, job_id: str, host: str, ttl: int) -> str:
    lease = secrets.token_urlsafe(24)
    now = time.time()
    with conn.pipeline() as p:
        p.hset(lease_key(lease), mapping={"job": job_id, "host": host, "state": "assigned", "beat": now,
                                          "assigned_at": now, "seconds_done": 0, "seconds_total": ""})
        p.expire(lease_key(lease), ttl)
        p.execute()
    return lease


def read_lease(conn, lease: str) -> dict:
    return {k.decode(): v.decode() for k, v in conn.hgetall(lease_key(lease)).items()}


def end_lease(conn, lease: str, state: str = "ended") -> None:
    """The attempt is over on the front's side: further calls about it get 410."""
    with conn.pipeline() as p:
        p.hset(lease_key(lease), "state", state)
        p.expire(lease_key(lease), 3600)
        p.execute()


def active_lease(conn, lease: str, host: str) -> dict:
    """The lease, if it belongs to `host` and its job still runs; else 404 (not this host's) or 410 (ended)."""
    if not lease or len(lease) > 64:
        raise not_found("No such lease.", code="lease_not_found")
    h = read_lease(conn, lease)
    if not h or not hmac.compare_digest(h.get("host", ""), host):
        raise not_found("No such lease.", code="lease_not_found")
    if h.get("state") not in ("assigned", "running"):
        raise gone()
    return h


def _number(value, name: str, upper: float) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= upper:
        raise APIError(422, f"{name} must be a number from 0 to {upper:g}.", param=name, code="invalid_value")
    return float(value)


def report_progress(conn, lease: str, host: str, body: dict, max_seconds: float) -> dict:
    """A beat, with the seconds done and in all; answers whether the worker host must stop."""
    h = active_lease(conn, lease, host)
    if not isinstance(body, dict):
        raise APIError(422, "The progress body must be a JSON object.", code="invalid_value")
    done = _number(body.get("seconds_done"), "seconds_done", max_seconds)
    total = _number(body.get("seconds_total"), "seconds_total", max_seconds)
    fields = {"beat": time.time(), "state": "running"}
    if done is not None:
        fields["seconds_done"] = done
    if total is not None:
        fields["seconds_total"] = total
    conn.hset(lease_key(lease), mapping=fields)
    return {"stop": h.get("stop") or None}


def report_failure(conn, lease: str, host: str, body: dict) -> None:
    """The worker host could not finish: the input's fault ("input": the job fails with its error), a crash
    ("crash": RQ retries it) or its own stop ("shutdown": the job goes back to the head of its queue without using
    a retry, as a stopping worker on the front hands its job back)."""
    active_lease(conn, lease, host)
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind not in ("input", "crash", "shutdown"):
        raise APIError(422, "kind must be 'input', 'crash' or 'shutdown'.", param="kind", code="invalid_value")
    error = body.get("error") or {}
    if not isinstance(error, dict):
        raise APIError(422, "error must be an object.", param="error", code="invalid_value")
    clean: dict[str, Any] = {"message": str(error.get("message") or "")[:MAX_ERROR_MESSAGE] or "the worker host failed",
             "code": str(error.get("code") or "")[:64] or None, "param": str(error.get("param") or "")[:64] or None}
    if clean["code"] and not all(c.isalnum() or c == "_" for c in clean["code"]):
        clean["code"] = None
    status = error.get("status")
    clean["status"] = status if isinstance(status, int) and 400 <= status < 500 else 400
    conn.hset(lease_key(lease), mapping={"state": "failed", "kind": kind, "error": json.dumps(clean),
                                         "beat": time.time()})


def parse_result(data: bytes, max_seconds: float) -> dict:
    """A worker host's result as JSON, checked for the shape every service's results have; 422 otherwise."""
    def refuse(why: str) -> APIError:
        return APIError(422, f"The result is refused: {why}.", code="invalid_result")

    def no_constant(name):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        result = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise refuse(f"not JSON ({type(e).__name__})") from None
    if not isinstance(result, dict):
        raise refuse("not a JSON object")
    segments = result.get("segments")
    if not isinstance(segments, list):
        raise refuse("no list of segments")
    limit = max_seconds + 60

    def time_ok(v, nullable=False) -> bool:
        if v is None:
            return nullable
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= limit

    for i, s in enumerate(segments):
        if not isinstance(s, dict) or not isinstance(s.get("text", ""), str):
            raise refuse(f"segment {i} is not an object with a text")
        if not (time_ok(s.get("start"), True) and time_ok(s.get("end"), True)):
            raise refuse(f"segment {i} has no valid times")
        if s.get("start") is not None and s.get("end") is not None and s["start"] > s["end"]:
            raise refuse(f"segment {i} ends before it starts")
        if "speaker" in s and s["speaker"] is not None and not isinstance(s["speaker"], str):
            raise refuse(f"segment {i} has a speaker that is not a name")
        for j, w in enumerate(s.get("words") or []):
            if not isinstance(w, dict) or not isinstance(w.get("word", ""), str) \
                    or not (time_ok(w.get("start"), True) and time_ok(w.get("end"), True)):
                raise refuse(f"word {j} of segment {i} is not valid")
    if "duration" in result and not time_ok(result["duration"], True):
        raise refuse("its duration is not a number of seconds")
    for name in ("text", "language"):
        if name in result and result[name] is not None and not isinstance(result[name], str):
            raise refuse(f"its {name} is not text")
    return result


def store_result(conn, lease: str, folder: str, result: dict) -> None:
    """The checked result, for the relay to take: beside the job's audio, then the lease says done. A full disk
    does not lose it: it waits in the lease itself (read_result), as a front worker's result goes to Redis then."""
    path = os.path.join(folder, f"remote-{lease}.json")
    fields = {"state": "done", "beat": time.time()}
    try:
        with open(path + ".part", "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        os.replace(path + ".part", path)
    except OSError as e:
        try:
            os.unlink(path + ".part")
        except FileNotFoundError:
            pass
        if not is_disk_full(e):
            raise
        fields["result"] = json.dumps(result, ensure_ascii=False)
    conn.hset(lease_key(lease), mapping=fields)


def read_result(conn, folder: str, lease: str, h: dict) -> dict:
    """A done lease's result, for the relay: from the job's folder, or from the lease when the disk was full (then
    dropped from it: the relay stores it as a front worker would)."""
    path = os.path.join(folder, f"remote-{lease}.json")
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except FileNotFoundError:
        result = json.loads(h["result"])
        conn.hdel(lease_key(lease), "result")
        return result
    os.unlink(path)
    return result
