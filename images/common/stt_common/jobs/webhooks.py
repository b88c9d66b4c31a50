"""Webhook deliveries: queued as records when a job ends, delivered by threads of their own, apart from
transcription, so that a slow or hostile receiver delays no job.

A job's end (execution.finish) writes a delivery record (keys.delivery_key: the recipient URL, the caller, the
payload, the attempt) and puts its id in the service's due set (keys.deliveries_key, scored by the time it is
due). `Deliverer` threads in the front's job worker take due records one at a time (a Lua script moves the taken
id forward by a lease, so a delivery whose process died is taken again later), sign the body with the caller's
secret (signing.py) and POST it through stt_common.outbound: the address resolved once and pinned, no
redirects, no private or otherwise non-global address, one deadline (`STT_WEBHOOK_TIMEOUT`) for the whole
delivery, the answer's body read at most 64 KiB. A 2xx delivers; anything else is retried after 10 s, 1, 5, 15
and 30 min, then dropped (each failed attempt counted in stt_webhook_failures_total).

The record holds everything the delivery needs: nothing in it names code, and worker hosts cannot write it (they
have no Redis access: link.py).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Optional

from ..outbound import OutboundError, policy_from, request
from .keys import deliveries_key, delivery_key, stats_key
from .signing import DELIVERY_HEADER, SIGNATURE_HEADER, caller_secret, sign

log = logging.getLogger("stt_common.jobs")

WEBHOOK_RETRY_INTERVALS = [10, 60, 300, 900, 1800]
MAX_ANSWER_BYTES = 64 * 1024

_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], due[1])
return due[1]
"""


def queue_delivery(conn, service: str, url: str, owner: str, payload: dict, ttl: int,
                   delay: float = 0.0) -> str:
    """A delivery record, due now (or after `delay` s)."""
    delivery = uuid.uuid4().hex
    record = {"id": delivery, "service": service, "url": url, "owner": owner, "payload": payload, "attempt": 0,
              "created_at": int(time.time()), "last_error": None}
    with conn.pipeline() as p:
        p.set(delivery_key(delivery), json.dumps(record), ex=max(ttl, sum(WEBHOOK_RETRY_INTERVALS) + 3600))
        p.zadd(deliveries_key(service), {delivery: time.time() + delay})
        p.execute()
    return delivery


def pending(conn, service: str) -> int:
    return int(conn.zcard(deliveries_key(service)))


class Deliverer:
    """Threads that deliver a service's due webhooks, apart from the jobs' own thread."""

    def __init__(self, conn, settings, service: str, threads: int = 2, poll_s: float = 1.0, resolver=None):
        """`resolver`: getaddrinfo's stand-in (tests play a rebinding name server with it)."""
        self.conn, self.settings, self.service, self.resolver = conn, settings, service, resolver
        self.threads, self.poll_s = threads, poll_s
        self.deadline_s = float(getattr(settings, "webhook_timeout", 15.0))
        self.policy = policy_from(settings.webhook_allow_private, getattr(settings, "webhook_allow_networks", ""))
        self.lease_s = 2 * self.deadline_s + 30
        self.stop = threading.Event()
        self._threads: list = []

    def start(self) -> "Deliverer":
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"webhooks-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.deliver_next():
                    self.stop.wait(self.poll_s)
            except Exception as e:  # noqa: BLE001 - Redis away: try again after a pause
                log.warning("webhook deliveries paused: %s", e)
                self.stop.wait(5 * self.poll_s)

    def take(self) -> Optional[str]:
        now = time.time()
        taken = self.conn.eval(_TAKE, 1, deliveries_key(self.service), now, now + self.lease_s)
        return taken.decode() if isinstance(taken, bytes) else taken

    def deliver_next(self) -> bool:
        """Deliver one due webhook; False when none is due."""
        delivery = self.take()
        if not delivery:
            return False
        raw = self.conn.get(delivery_key(delivery))
        if raw is None:   # expired
            self.conn.zrem(deliveries_key(self.service), delivery)
            return True
        record = json.loads(raw)
        error = self.attempt(record)
        if error is None:
            with self.conn.pipeline() as p:
                p.zrem(deliveries_key(self.service), delivery)
                p.delete(delivery_key(delivery))
                p.execute()
            return True
        self.conn.hincrbyfloat(stats_key(self.service), "webhook_failures", 1)
        record["attempt"] = attempt = int(record.get("attempt", 0)) + 1
        record["last_error"] = error
        host = (record["url"].split("/") + ["", "", ""])[2]
        if attempt > len(WEBHOOK_RETRY_INTERVALS):
            log.warning("webhook %s for job %s to %s failed %d times (last: %s): given up", delivery,
                        record["payload"].get("id"), host, attempt, error)
            with self.conn.pipeline() as p:
                p.zrem(deliveries_key(self.service), delivery)
                p.delete(delivery_key(delivery))
                p.execute()
            return True
        wait = WEBHOOK_RETRY_INTERVALS[attempt - 1]
        log.info("webhook %s for job %s to %s failed (%s): retry %d in %d s", delivery, record["payload"].get("id"),
                 host, error, attempt, wait)
        with self.conn.pipeline() as p:
            p.set(delivery_key(delivery), json.dumps(record), keepttl=True)
            p.zadd(deliveries_key(self.service), {delivery: time.time() + wait})
            p.execute()
        return True

    def attempt(self, record: dict) -> Optional[str]:
        """One POST of the record; None when delivered, else why not."""
        body = json.dumps(record["payload"], separators=(",", ":")).encode()
        secret, _ = caller_secret(self.conn, self.settings.webhook_secret, record["owner"])
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: record["id"],
                   SIGNATURE_HEADER: sign(secret, int(time.time()), record["url"], body)}
        try:
            r = request(record["url"], method="POST", body=body, headers=headers, deadline_s=self.deadline_s,
                        max_bytes=MAX_ANSWER_BYTES, truncate=True, policy=self.policy, resolver=self.resolver,
                        user_agent="whisper-platform-webhook")
        except OutboundError as e:
            return f"{e.reason}: {e.message}"
        if 200 <= r.status < 300:
            return None
        return f"answered {r.status}"
