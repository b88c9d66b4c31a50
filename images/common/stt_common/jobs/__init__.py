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

Nothing in Redis is code: jobs are stored as JSON and a worker runs only the functions of an allow-list (codec).
Worker hosts have no Redis access at all: they take jobs, report progress and hand in results through a narrow
interface of the front (link: each job a lease bound to one host and one attempt, every result checked), while
relays on the front run those jobs' RQ side (relay). Whichever attempt finishes first claims the job
(`stt:finished:<id>`, SET NX): an attempt that was cut off and comes back late drops its result, so a client never
sees a job finish twice. Webhooks are delivered by threads of the front's worker, apart from transcription,
through stt_common.outbound (the address resolved once and pinned, no redirects, no private or otherwise
non-global address, one deadline), signed with the caller's own secret over the recipient URL and the body
(webhooks, signing). Submissions are bounded per caller and per service (quotas: 429 with Retry-After), and a job
is accepted in one transaction with its owner's index and counts, or not at all.

The modules, one concern each:
    keys        every Redis key and queue name, and the function names RQ stores with a job
    codec       jobs as JSON, the allow-list of job functions, the conversion of jobs pickled by earlier versions
    spec        JobSpec (what a service plugs in), RunContext (what its run may use) and JobContext (the front's)
    connection  the Redis connection, the link's TLS, the worker's name
    signing     the webhook signature, the callers' secrets and the callback URL check
    status      our five states and the status body
    store       job folders, results, the sweep of expired folders (sweep: its entry point for the host timer)
    quotas      per-caller and per-service limits, and the atomic admission of a job
    api         Jobs: the API side (accept, status, result, cancel, list, webhook secret, counts)
    routes      the /v1/jobs routes and the link's routes;  metrics: the Prometheus collector
    link        the worker hosts' interface: tokens, tickets, leases, result checks
    runtime     the worker process's spec and settings, and its counters in Redis
    execution   execute and on_failure, the job functions RQ runs;  webhooks: deliveries and their retries
    worker      the RQ worker class and run_worker (imported by the workers' entry points only)
    relay       the front's RQ workers that hand jobs to worker hosts;  remote: a worker host's job loop

This package imports the API side only. The worker side (execution, webhooks, worker) is loaded when a name of it
is asked for (`__getattr__` below), and the entry points import `stt_common.jobs.worker` themselves.
"""
from __future__ import annotations

import importlib

from .api import Jobs, owner_of
from .connection import link_ssl_context, redis_connection, worker_name
from .keys import cancel_key, finished_key, owner_index_key, queue_name, stats_key, worker_stats_key
from .metrics import register_job_metrics
from .routes import mount_jobs
from .signing import DELIVERY_HEADER, SIGNATURE_HEADER, caller_secret, check_callback_url, derived_secret, sign, verify
from .spec import PROGRESS_EVERY_S, JobContext, JobSpec, RunContext, claim_finish
from .status import describe, failed_error, job_state, retry_time
from .store import sweep_files

# the worker side, loaded on first use
_WORKER_SIDE = {
    "execute": "execution", "on_failure": "execution",
    "Deliverer": "webhooks", "WEBHOOK_RETRY_INTERVALS": "webhooks",
    "run_worker": "worker", "ModelWorker": "worker",
}


def __getattr__(name: str):
    module = _WORKER_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Jobs", "owner_of", "link_ssl_context", "redis_connection", "worker_name", "cancel_key", "finished_key",
    "owner_index_key", "queue_name", "stats_key", "worker_stats_key", "register_job_metrics", "mount_jobs",
    "DELIVERY_HEADER", "SIGNATURE_HEADER", "caller_secret", "check_callback_url", "derived_secret", "sign", "verify",
    "PROGRESS_EVERY_S", "JobContext", "JobSpec", "RunContext", "claim_finish", "describe", "failed_error", "job_state",
    "retry_time", "sweep_files", *_WORKER_SIDE,
]
