"""Every name the jobs keep in Redis, in one place: RQ's queues, our own keys, and the dotted paths of the
functions RQ stores with each job (it imports them by name when it runs the job)."""
from __future__ import annotations

# RQ stores these strings in every job it enqueues; a job queued before an upgrade runs after it, so they stay
# as they are: the package resolves them (stt_common.jobs.__getattr__) without the API importing the worker side.
EXECUTE = "stt_common.jobs.execute"
ON_FAILURE = "stt_common.jobs.on_failure"
DELIVER_WEBHOOK = "stt_common.jobs.deliver_webhook"


def queue_name(service: str) -> str:
    return f"stt-{service}"


def webhook_queue_name(service: str) -> str:
    return f"stt-{service}-webhooks"


def owner_index_key(service: str, owner: str) -> str:
    """A caller's recent jobs (a sorted set by submission time): `GET /v1/jobs`."""
    return f"stt:{service}:owner:{owner}"


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
