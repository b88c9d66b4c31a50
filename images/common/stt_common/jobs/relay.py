"""python -m stt_common.jobs.relay: the front's stand-ins for its worker hosts' slots (link.py).

A relay is an RQ worker of the service's queue, on the front, that loads no model: it takes a job only when a
worker host's slot is waiting for one (a claimed ticket), and runs the job's `execute` like any worker, with a
`spec.run` that hands the job to that slot and waits for its result (`remote_run`). So RQ's machinery is the
same for every job (heartbeats, the time limit, retries after a crash or an abandoned attempt, the failure
callback), the result is stored beside the audio on the front, and the webhook goes from the front: a worker
host only ever talks to the link interface.

STT_LINK_RELAYS processes run side by side (one per worker-host slot, counted by the deploy), each restarted if
it dies; SIGTERM stops them all (RQ's warm shutdown: a relayed job in progress is left to be retried)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import time
import uuid
from typing import Any, Optional, cast

from rq.exceptions import DequeueTimeout
from rq.worker import WorkerStatus

from ..errors import APIError
from ..executor import JobStopped
from ..settings import STTSettings
from . import link, runtime
from .codec import SERIALIZER, StoredJob, queue
from .connection import redis_connection, wait_for_redis, worker_name
from .keys import lease_key, queue_name
from .spec import JobContext, JobSpec
from .worker import ModelWorker

log = logging.getLogger("stt_common.jobs")
POLL_S = 0.5


class RemoteLost(Exception):
    """The worker host stopped beating (cut off, killed): the attempt ends as a crash, RQ retries the job."""


class RelayWorker(ModelWorker):
    """An RQ worker that takes a job only for a waiting worker-host slot and hands it over (remote_run)."""

    def __init__(self, queues, **kwargs):
        super().__init__(queues, **kwargs)
        self.ticket: Optional[str] = None
        self.slot: dict = {}

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        self.set_state(WorkerStatus.IDLE)
        self.procline("Waiting for a worker host's slot")
        while True:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            ticket = link.pop_ticket(self.connection, runtime.SPEC.service, min(timeout or 1, 5))
            if ticket is None:
                if timeout is None:   # burst: no slot is waiting
                    return None
                continue
            slot = link.claim_ticket(self.connection, ticket, self.name)
            if slot is None:   # gone, or too close to its end: the slot asks again
                continue
            wait = int(max(1, float(slot["expires"]) - time.time() - 2))
            try:
                result = self.queue_class.dequeue_any(self._ordered_queues, wait, connection=self.connection,
                                                      job_class=self.job_class, serializer=self.serializer,
                                                      death_penalty_class=self.death_penalty_class)
            except DequeueTimeout:
                result = None
            if result is None:
                link.release_ticket(self.connection, ticket, self.name)
                continue
            self.ticket, self.slot = ticket, slot
            log.info("relay %s: job %s for %s (%s)", self.name, result[0].id, slot["host"], slot.get("slot"))
            return result

    def execute_job(self, job, queue):
        runtime.REMOTE_HOST, runtime.TICKET, runtime.RELAY = self.slot.get("host"), self.ticket, self.name
        try:
            super().execute_job(job, queue)
        finally:
            runtime.REMOTE_HOST = runtime.TICKET = runtime.RELAY = None
            self.ticket, self.slot = None, {}


def remote_run(audio_path: str, params: dict, ctx: JobContext) -> dict:
    """JobSpec.run of a relay: hand the job to the slot that asked for it, follow its lease, return its result. It
    takes the front's JobContext, not any RunContext: it reads and writes the job's lease in Redis (`ctx.conn`)."""
    # execute_job set these for the job it runs, and configure() the settings, before RQ calls this
    conn, job, settings = ctx.conn, ctx.job, cast(Any, runtime.SETTINGS)
    host = cast(str, runtime.REMOTE_HOST)
    ttl = int(settings.job_max_seconds) + 3600
    lease = link.new_lease(conn, job.id, host, ttl)
    beat_ttl = max(2.0, float(settings.job_heartbeat_ttl))
    assignment = {"lease": lease, "job_id": job.id, "params": params, "heartbeat_s": beat_ttl,
                  "attempt": int(job.meta.get("attempts") or 1)}
    if not link.assign_ticket(conn, cast(str, runtime.TICKET), cast(str, runtime.RELAY), assignment):
        link.end_lease(conn, lease)
        raise RemoteLost(f"the slot of {host} that asked for this job is gone")
    folder = os.path.dirname(audio_path)
    state, shown = "assigned", 0.0
    try:
        while True:
            h = link.read_lease(conn, lease)
            state = h.get("state", "")
            if state == "done":
                return link.read_result(conn, folder, lease, h)
            if state == "failed":
                if h.get("kind") == "shutdown":   # the worker host stopped: handed back (execution.hand_back)
                    ctx.reason = "shutdown"
                    raise JobStopped("shutdown")
                error = json.loads(h.get("error") or "{}")
                if h.get("kind") == "input":
                    raise APIError(int(error.get("status") or 400), error.get("message") or "the input was refused",
                                   param=error.get("param"), code=error.get("code"))
                raise RuntimeError(f"the job crashed on {host}: {error.get('message', '')[:200]}")
            # the first beat may take a request's round trip longer than the others (the slot gets its answer)
            grace = beat_ttl + (link.NEXT_WAIT_S if state == "assigned" else 0)
            if time.time() - float(h.get("beat") or 0) > grace:
                raise RemoteLost(f"{host} stopped reporting for {grace:.0f} s")
            # the worker host paces its beats: each new value is stored (the seconds done before the total, so that a
            # status showing the total never shows the done seconds of an earlier beat)
            done = float(h.get("seconds_done") or 0)
            if done and done != shown:
                ctx.progress(done, force=True)
                shown = done
            total = h.get("seconds_total")
            if total and (ctx.total is None or abs(float(total) - ctx.total) > 0.01):
                ctx.set_total(float(total))
            try:
                ctx.check()
            except JobStopped as e:
                conn.hset(lease_key(lease), "stop", e.args[0] if e.args else "canceled")
                raise
            time.sleep(POLL_S)
    finally:
        if state not in ("done",):
            link.end_lease(conn, lease)


def run_relay(settings: STTSettings) -> None:
    """One relay process."""
    service = settings.jobs_service
    # a relay only runs: the front prepares and renders (JobSpec types them for the services' own specs)
    spec = JobSpec(service=service, formats=(), prepare=None, run=remote_run, render=None)  # type: ignore[arg-type]
    runtime.configure(spec, settings)
    # a dequeue waits up to a slot's wait
    conn = redis_connection(settings, role="worker", socket_timeout=link.NEXT_WAIT_S + 30)
    wait_for_redis(conn)
    ttl = max(2, int(settings.job_heartbeat_ttl))
    maintenance = max(1, ttl // 2)
    worker = RelayWorker([queue(conn, queue_name(service), int(settings.job_max_seconds))], connection=conn,
                         maintenance_interval=maintenance, worker_ttl=maintenance + 15,
                         name=f"{worker_name(settings)}/relay-{uuid.uuid4().hex[:8]}", heartbeat_ttl=ttl,
                         job_settings=settings, service=service, job_class=StoredJob, serializer=SERIALIZER)
    log.info("relay %s: handing %s jobs to worker hosts", worker.name, service)
    worker.work(burst=False, with_scheduler=True, logging_level=os.environ.get("LOG_LEVEL", "INFO").upper())


def _child() -> None:
    run_relay(runtime.standalone_settings("by a relay"))


def main() -> int:
    """STT_LINK_RELAYS relay processes, each restarted after it ended (after a pause); SIGTERM ends them all."""
    settings = runtime.standalone_settings("by the relays")
    ctx = multiprocessing.get_context("spawn")
    children: dict = {}
    stopping = {"now": False}

    def stop(signum, frame):
        stopping["now"] = True
        for p in children.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started: dict = {}
    while not stopping["now"]:
        for i in range(settings.link_relays):
            p = children.get(i)
            if p is not None and p.is_alive():
                continue
            if p is not None and time.monotonic() - started.get(i, 0) < 5:
                continue   # ended right after its start: a pause before the next
            children[i] = ctx.Process(target=_child, name=f"relay-{i}", daemon=False)
            children[i].start()
            started[i] = time.monotonic()
        time.sleep(1)
    for p in children.values():
        p.join(60)
        if p.is_alive():
            p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
