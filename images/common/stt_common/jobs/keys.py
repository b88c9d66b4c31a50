"""Every name the jobs keep in Redis, in one place: RQ's queues, our own keys, and the function names RQ stores
with each job (codec.ALLOWED resolves them; nothing is imported by a path read from Redis)."""
from __future__ import annotations

# RQ stores these strings in every job it enqueues; a job queued before an upgrade runs after it, so they stay
# as they are (codec.ALLOWED maps them to the functions).
EXECUTE = "stt_common.jobs.execute"
ON_FAILURE = "stt_common.jobs.on_failure"
# webhook deliveries were RQ jobs of this name on webhook_queue_name(): read once by codec.legacy_webhook_jobs
DELIVER_WEBHOOK = "stt_common.jobs.deliver_webhook"


def queue_name(service: str) -> str:
    return f"stt-{service}"


def webhook_queue_name(service: str) -> str:
    """The RQ queue that held webhook deliveries before they had their own records (legacy, drained at start)."""
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
    """Where a worker host put its result before results went through the front (read until they expire)."""
    return f"stt:result:{job_id}"


def finished_key(job_id: str) -> str:
    return f"stt:finished:{job_id}"


# --- quotas (quotas.py): jobs queued or running, and bytes stored, per caller and in all
def active_key(service: str, owner: str = "") -> str:
    """Queued and running jobs (a sorted set by submission time): a caller's, or all of the service's."""
    return f"stt:{service}:active:{owner}" if owner else f"stt:{service}:active"


def stored_key(service: str) -> str:
    """job id -> "<owner> <bytes>": what each job's files take on disk."""
    return f"stt:{service}:stored"


def usage_key(service: str) -> str:
    """owner -> bytes stored, and "*" -> bytes stored in all."""
    return f"stt:{service}:usage"


# --- webhook deliveries (webhooks.py)
def deliveries_key(service: str) -> str:
    """Deliveries by the time they are due (a sorted set of delivery ids)."""
    return f"stt:{service}:webhooks"


def delivery_key(delivery_id: str) -> str:
    return f"stt:webhook:{delivery_id}"


def caller_secret_key(owner: str) -> str:
    """A webhook secret a caller set for itself (PUT /v1/jobs/webhook-secret); absent: derived (signing.py)."""
    return f"stt:caller:{owner}:webhook-secret"


# --- worker hosts (link.py, relay.py)
def tickets_key(service: str) -> str:
    """Worker-host slots waiting for a job (a list of ticket ids, newest first)."""
    return f"stt:{service}:link:tickets"


def ticket_key(ticket: str) -> str:
    return f"stt:link:ticket:{ticket}"


def ticket_signal_key(ticket: str) -> str:
    return f"stt:link:ticket:{ticket}:signal"


def lease_key(lease: str) -> str:
    """A job handed to a worker host: its job, host, state, last beat and progress (a hash)."""
    return f"stt:link:lease:{lease}"
