"""The job functions RQ runs in the worker (by the names in keys.py): one transcription (`execute`), and the
failure callback of a job whose worker died on its last attempt (`on_failure`)."""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid

from ..errors import APIError
from ..executor import JobStopped
from . import runtime
from .connection import worker_name
from .keys import cancel_key, finished_key
from .spec import JobContext, claim_finish
from .status import failed_error, iso_now
from .store import fetch_audio, save_result
from .webhooks import send_or_queue_webhook

log = logging.getLogger("stt_common.jobs")
# how often a job may go back to its queue because its worker was stopping: never reached by restarts and deploys;
# a job handed back this often fails (RQ's limit of returned Retry values)
HAND_BACKS = 100


def execute() -> dict:
    """The RQ job function (runs in the worker): one transcription, its result stored beside the audio."""
    from rq import get_current_job

    job = get_current_job()
    conn = job.connection
    spec, settings = runtime.SPEC, runtime.SETTINGS
    folder = os.path.join(settings.jobs_dir, job.id)
    remote = bool(settings.jobs_fetch_url)   # a worker host: the audio comes over the link, the result goes to Redis
    if conn.exists(finished_key(job.id)):   # an attempt elsewhere already finished it
        return {"state": "duplicate"}
    job.meta.update(attempts=int(job.meta.get("attempts", 0)) + 1, worker=worker_name(settings),
                    seconds_done=0.0, error=None)
    job.save_meta()
    ctx = JobContext(job, conn, stopping=runtime.STOPPING.is_set)
    t0 = time.monotonic()
    outcome, error = "succeeded", None
    try:
        try:
            if conn.exists(cancel_key(job.id)):
                raise JobStopped("canceled")
            audio = fetch_audio(settings, job, folder) if remote else os.path.join(folder, "audio")
            result = spec.run(audio, job.meta.get("params") or {}, ctx)
            save_result(conn, settings, job.id, result, remote)
        finally:
            if remote:   # the worker host keeps no copy of anyone's audio
                shutil.rmtree(folder, ignore_errors=True)
        if not claim_finish(conn, job, settings, ctx.attempt):
            log.warning("job %s was finished elsewhere meanwhile: this late result is dropped", job.id)
            return {"state": "duplicate"}
        runtime.stat(conn, "job_audio_seconds", float(result.get("duration") or 0.0))
        ctx.progress(ctx.total or result.get("duration") or 0.0, force=True)
    except JobStopped:
        if ctx.reason == "shutdown":
            return hand_back(job)
        outcome = "canceled"
    except APIError as e:  # the input's fault (undecodable audio, too long, ...): retrying cannot help
        outcome, error = "failed", e.body()["error"]
    except Exception as e:  # noqa: BLE001
        # a crash: RQ retries it while retries are left; the webhook and state only for the last attempt
        last = not job.retries_left
        if last and claim_finish(conn, job, settings, ctx.attempt):
            job.meta.update(state="failed", finished_at=iso_now(),
                            error=failed_error(int(job.meta.get("attempts") or 1),
                                               f"the last attempt raised {type(e).__name__}"))
            job.save_meta()
            finish(job, conn, "failed", time.monotonic() - t0)
        raise
    if outcome != "succeeded" and not claim_finish(conn, job, settings, ctx.attempt):
        return {"state": "duplicate"}
    job.meta.update(state=outcome, finished_at=iso_now(), error=error)
    job.save_meta()
    if outcome == "canceled":
        conn.delete(cancel_key(job.id))
        shutil.rmtree(folder, ignore_errors=True)
    finish(job, conn, outcome, time.monotonic() - t0)
    return {"state": outcome}


def hand_back(job):
    """The worker was asked to stop mid-job (a deploy recreating it, Docker or the host restarting): the job goes
    back to the head of its queue at once, for the next worker, without using one of its retries (a stop is not a
    failure, and this run's attempt is not counted); nothing of this run was stored or claimed. RQ's `Retry` return
    value does that: requeued at the front, its crash retries (`retries_left`) untouched."""
    from rq import Retry

    log.warning("job %s: its worker is stopping: back to the head of the queue", job.id)
    job.meta.update(attempts=max(0, int(job.meta.get("attempts") or 1) - 1), worker=None, seconds_done=0.0)
    job.save_meta()
    return Retry(max=HAND_BACKS, interval=0, enqueue_at_front=True)


def on_failure(job, connection, exc_type=None, exc_value=None, traceback=None) -> None:
    """RQ's failure callback. Acts on the last attempt of a job whose worker died (RQ calls it with an
    AbandonedJobError from the maintenance of the worker that found the job abandoned, before it records the
    failure): that attempt never reached execute's own handler, so the job's state, its error (how many times it
    failed) and its webhook are set here. A crash inside `execute` has already recorded its own (and claimed the
    job); a job with retries left goes back to its queue after its back-off."""
    from rq.exceptions import AbandonedJobError

    if job.retries_left or runtime.SETTINGS is None:
        return
    if not (exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError)):
        return
    if not claim_finish(connection, job, runtime.SETTINGS, uuid.uuid4().hex):
        return
    attempts = int(job.meta.get("attempts") or 1)
    log.warning("job %s: its worker stopped during its last attempt (%d in all): failed", job.id, attempts)
    job.meta.update(state="failed", finished_at=iso_now(),
                    error=failed_error(attempts, "the worker running its last attempt stopped (killed, out of "
                                                 "memory, or its host went down)"))
    job.save_meta()
    finish(job, connection, "failed", 0.0)


def finish(job, conn, outcome: str, seconds: float) -> None:
    """A job's end: the counters, and its webhook when it has a callback_url."""
    runtime.stat(conn, f"jobs_{outcome}")
    runtime.stat(conn, "job_seconds", seconds)
    url = job.meta.get("callback_url")
    if url:
        payload = {"id": job.id, "object": "transcription.job", "status": outcome,
                   "result_url": f"/v1/jobs/{job.id}/result" if outcome == "succeeded" else None,
                   "error": job.meta.get("error")}
        send_or_queue_webhook(conn, url, payload)
