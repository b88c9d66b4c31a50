"""A job as the API shows it: our five states from RQ's, and the status body (progress, attempts, retry time)."""
from __future__ import annotations

import time
from typing import Optional

from ..errors import error_body


def _iso(dt) -> Optional[str]:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def job_state(job) -> str:
    """Our five states from RQ's status and what the worker recorded in the job's meta."""
    recorded = job.meta.get("state")
    if recorded in ("succeeded", "failed", "canceled"):
        return recorded
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    if status == "started":
        return "running"
    if status in ("queued", "deferred", "scheduled"):
        return "queued"
    if status == "finished":
        return "succeeded"
    if status in ("canceled", "stopped"):
        return "canceled"
    return "failed"


def retry_time(job) -> Optional[str]:
    """When a retried job is due back in its queue (RQ's scheduled registry), or None (not waiting)."""
    from rq.registry import ScheduledJobRegistry

    try:
        if getattr(job.get_status(refresh=False), "value", None) != "scheduled":
            return None
        when = ScheduledJobRegistry(job.origin, connection=job.connection).get_scheduled_time(job)
    except Exception:  # noqa: BLE001 - a hint, like the queue position
        return None
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def failed_error(attempts: int, why: str) -> dict:
    """The OpenAI-shaped error of a job whose every attempt crashed or lost its worker."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return error_body(f"The job failed {times}: {why}.", "server_error", None, "job_failed")["error"]


def describe(job, base_path: str = "/v1/jobs") -> dict:
    meta = job.meta
    state = job_state(job)
    total = meta.get("seconds_total")
    done = meta.get("seconds_done", 0.0)
    if state == "succeeded" and total:
        done = total
    body = {
        "id": job.id, "object": "transcription.job", "status": state,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": meta.get("finished_at") or (_iso(job.ended_at) if state in ("succeeded", "failed") else None),
        "progress": {"seconds_done": round(done, 2), "seconds_total": total,
                     "fraction": round(min(1.0, done / total), 4) if total else None},
        "queue_position": None, "attempts": meta.get("attempts", 0), "worker": meta.get("worker"),
        "filename": meta.get("filename"), "model": meta.get("model"),
        "status_url": f"{base_path}/{job.id}", "result_url": None, "error": meta.get("error"),
        "retry_at": None,
    }
    if state == "queued":
        try:
            pos = job.get_position()
            body["queue_position"] = pos
        except Exception:  # noqa: BLE001 - a position is a hint
            pass
        if body["attempts"]:   # a retry waiting out its back-off (STT_JOB_RETRY_INTERVALS)
            body["retry_at"] = retry_time(job)
    if state == "succeeded":
        body["result_url"] = f"{base_path}/{job.id}/result"
    if state == "failed" and not body["error"]:
        body["error"] = error_body("The job failed on the worker.", "server_error", None, "job_failed")["error"]
    return body
