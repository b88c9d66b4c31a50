"""The job worker: an RQ `SimpleWorker` that keeps the service's model loaded, beats its heartbeat while a job runs,
runs RQ's scheduler under its own name (so that another worker can take over the scheduler of a dead one), reads
and writes jobs as JSON and runs only the functions of codec.ALLOWED. On the front it also delivers the webhooks
(webhooks.Deliverer, threads apart from the jobs). On a worker host (STT_JOBS_FRONT_URL) the same entry point runs
remote.run_remote_worker instead: no RQ, no Redis. Imported by the workers' entry points only
(`python -m <service>_server.worker`): the API process never loads it nor RQ's worker through it."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Optional, cast

from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.worker import DequeueStrategy, SimpleWorker, WorkerStatus

from . import runtime
from .codec import SERIALIZER, StoredJob, convert_legacy_jobs, legacy_webhook_jobs, queue
from .connection import redis_connection, wait_for_redis, worker_name
from .keys import queue_name, webhook_queue_name
from .spec import JobSpec
from .webhooks import Deliverer, queue_delivery

log = logging.getLogger("stt_common.jobs")


class ModelWorker(SimpleWorker):
    """Runs jobs in its own process (the model stays loaded) with a heartbeat thread, so that a job whose
    worker died is found abandoned within STT_JOB_HEARTBEAT_TTL, not after the job's whole time limit.

    What it relies on in RQ beyond its documented API is pinned in tests/unit/test_jobs_rq_surface.py."""

    def __init__(self, queues, *, heartbeat_ttl: int, job_settings, service: str, **kwargs):
        self.job_heartbeat_ttl = heartbeat_ttl
        self.beat_every = max(0.5, heartbeat_ttl / 4)
        self.job_settings, self.service = job_settings, service
        self.with_named_scheduler, self.scheduler_burst = False, False
        super().__init__(queues, **kwargs)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return self.job_heartbeat_ttl

    def handle_warm_shutdown_request(self):
        """SIGTERM (a deploy recreating the container, Docker or the host restarting): RQ's warm shutdown would
        let the running job finish first, and the stop's grace period would end it with SIGKILL long before a
        meeting is transcribed. The running job stops at its next check instead and goes back to the head of its
        queue (execution.hand_back); then RQ's loop ends."""
        runtime.STOPPING.set()
        log.info("worker %s: stopping; a running job goes back to its queue", self.name)

    def execute_job(self, job, queue):
        if not getattr(job, "runnable", False):
            # a function or callback outside codec.ALLOWED, or data that is not JSON: fails without running
            # (StoredJob.func raises), and without retries
            log.error("job %s names no function of this service (%s): failed without running", job.id,
                      str(getattr(job, "_func_name", "?"))[:100])
            job.retries_left = 0
        execution = self.prepare_execution(job)
        stop = threading.Event()
        ttl = self.job_heartbeat_ttl

        def beat():
            while not stop.wait(self.beat_every):
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
        self.set_state(WorkerStatus.IDLE)

    # ---------------------------------------------------------------- the scheduler, named after this worker
    def work(self, burst: bool = False, logging_level: Optional[str] = None,
             date_format: str = DEFAULT_LOGGING_DATE_FORMAT, log_format: str = DEFAULT_LOGGING_FORMAT,
             max_jobs: Optional[int] = None, max_idle_time: Optional[int] = None, with_scheduler: bool = False,
             dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT) -> bool:
        """RQ's loop, RQ's signature. With `with_scheduler`, the scheduler is ours (started in `bootstrap`, where
        RQ's `work` would start its own right after), so RQ is told to start none."""
        self.with_named_scheduler, self.scheduler_burst = with_scheduler, burst
        return super().work(burst=burst, logging_level=logging_level, date_format=date_format, log_format=log_format,
                            max_jobs=max_jobs, max_idle_time=max_idle_time, with_scheduler=False,
                            dequeue_strategy=dequeue_strategy)

    def bootstrap(self, logging_level="INFO", date_format=DEFAULT_LOGGING_DATE_FORMAT,
                  log_format=DEFAULT_LOGGING_FORMAT):
        super().bootstrap(logging_level, date_format, log_format)
        if self.with_named_scheduler:
            self.start_named_scheduler(logging_level, date_format, log_format)

    def start_named_scheduler(self, logging_level, date_format, log_format) -> None:
        """What RQ's `work(with_scheduler=True)` does, with the scheduler named after this worker: the name is
        what a queue's scheduler lock holds, so another worker can tell that the scheduler holding it is gone with
        its worker (take_over_scheduler_locks). RQ's maintenance (re)starts `self.scheduler` as it does its own."""
        self.scheduler = RQScheduler(self.queues, connection=self.connection, logging_level=logging_level,
                                     date_format=date_format or DEFAULT_LOGGING_DATE_FORMAT,
                                     log_format=log_format or DEFAULT_LOGGING_FORMAT,
                                     serializer=self.serializer, name=self.name)
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if self.scheduler_burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def take_over_scheduler_locks(self) -> bool:
        """Drop a queue's scheduler lock whose worker is no longer registered (killed with its scheduler,
        host down): RQ's maintenance below then starts our scheduler, so retries due run on time instead of
        after the lock's 61 s. True when one was dropped."""
        dropped = False
        for q in self.queues:
            key = RQScheduler.get_locking_key(q.name)
            holder = self.connection.get(key)
            if holder is None:
                continue
            holder = cast(bytes, holder).decode()   # the worker's connection returns bytes
            if holder == self.name or self.connection.exists(self.redis_worker_namespace_prefix + holder):
                continue
            if release_lock(self.connection, key, holder):
                dropped = True
                log.info("worker %s: the scheduler of %s is gone with its worker %s: taking it over",
                         self.name, q.name, holder)
        return dropped

    def scheduler_running(self) -> bool:
        """Whether this worker's scheduler process is alive: the same check as RQ's own maintenance, on the
        scheduler's process attribute (RQ has no public accessor for it; pinned in the test named above)."""
        return self.scheduler is not None and self.scheduler._process is not None \
            and self.scheduler._process.is_alive()

    def run_maintenance_tasks(self):
        if runtime.STOPPING.is_set():
            return   # stopping: RQ's would start the scheduler its shutdown just stopped
        try:
            if self.take_over_scheduler_locks() and self.scheduler_running():
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


def run_worker(spec: JobSpec, settings, burst: bool = False) -> None:
    """A worker for one service: keeps its model loaded and takes jobs; on the front it also delivers webhooks.
    With STT_JOBS_FRONT_URL (a worker host) it takes its jobs through the front's link interface instead."""
    runtime.configure(spec, settings)
    if settings.jobs_front_url:
        from .remote import run_remote_worker
        return run_remote_worker(spec, settings, burst=burst)
    if not settings.redis_url:
        raise SystemExit("STT_REDIS_URL is empty: a job worker needs Redis (or STT_JOBS_FRONT_URL on a worker host).")
    os.makedirs(settings.jobs_dir, exist_ok=True)
    if spec.warm:
        spec.warm()
    conn = redis_connection(settings, role="worker")
    wait_for_redis(conn)
    adopt_legacy(conn, spec.service, settings)

    deliverer = Deliverer(conn, settings, spec.service).start() if settings.webhook_secret else None
    ttl = max(2, int(settings.job_heartbeat_ttl))
    queues = [queue(conn, queue_name(spec.service), int(settings.job_max_seconds))]
    # maintenance runs between waits for the next job: the wait (worker_ttl - 15) must not outlast its interval
    maintenance = max(1, ttl // 2)
    worker = ModelWorker(queues, connection=conn, maintenance_interval=maintenance, worker_ttl=maintenance + 15,
                         name=f"{worker_name(settings)}/{uuid.uuid4().hex[:8]}", heartbeat_ttl=ttl,
                         job_settings=settings, service=spec.service, job_class=StoredJob, serializer=SERIALIZER)
    log.info("worker %s listening on %s%s", worker.name, ", ".join(q.name for q in queues),
             "; delivering webhooks" if deliverer else "")
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level=os.environ.get("LOG_LEVEL", "INFO").upper())
    finally:
        if deliverer:
            deliverer.close()
    if not burst and not runtime.STOPPING.is_set():
        # RQ's loop gave up on its own (Redis out of reach longer than its retries, an error of its own): exit
        # non-zero, and the container's restart policy starts a fresh worker, which waits for Redis
        raise SystemExit(f"worker {worker.name}: RQ's loop ended without a stop request; exiting to be restarted")


def adopt_legacy(conn, service: str, settings) -> None:
    """What an earlier version left in Redis: pickled jobs become JSON (codec.convert_legacy_jobs), and webhook
    deliveries that were RQ jobs become delivery records, signed for their job's caller."""
    from rq.exceptions import NoSuchJobError

    from .codec import fetch

    try:
        convert_legacy_jobs(conn, [queue_name(service)])
        for url, payload in legacy_webhook_jobs(conn, webhook_queue_name(service)):
            try:
                owner = fetch(conn, str(payload.get("id"))).meta.get("owner") or "anonymous"
            except NoSuchJobError:
                owner = "anonymous"
            queue_delivery(conn, service, url, owner, payload, int(settings.job_ttl))
    except Exception as e:  # noqa: BLE001 - never keeps the worker from starting
        log.warning("converting jobs stored by an earlier version failed: %s", e)
