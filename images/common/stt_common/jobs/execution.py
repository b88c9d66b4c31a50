"""The job functions RQ runs in the worker (by the names in keys.py, through codec.ALLOWED): one transcription
(`execute`), and the failure callback of a job whose worker died on its last attempt (`on_failure`).

Both run on the front only: in its model worker, or in a relay (relay.py) whose `spec.run` hands the job to a
worker host and waits for its result. Either way the result lands beside the audio on the front's disk."""
from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any, cast

from ..audio_url import fetch_for_job
from ..errors import APIError
from ..executor import JobStopped
from . import quotas, runtime
from .keys import cancel_key, finished_key
from .spec import JobContext, JobSpec, claim_finish
from .status import failed_error, iso_now
from .store import remove_files, save_result
from .webhooks import queue_delivery

log = logging.getLogger("stt_common.jobs")
# how often a job may go back to its queue because its worker was stopping: never reached by restarts and deploys;
# a job handed back this often fails (RQ's limit of returned Retry values)
HAND_BACKS = 100


def execute() -> dict:
    """The RQ job function (runs in the worker): one transcription, its result stored beside the audio."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None   # RQ calls this only as a job's function
    conn = job.connection
    # the worker's runtime.configure() set both before it took a job
    spec, settings = cast(JobSpec, runtime.SPEC), cast(Any, runtime.SETTINGS)
    folder = os.path.join(settings.jobs_dir, job.id)
    if conn.exists(finished_key(job.id)):   # an attempt elsewhere already finished it
        return {"state": "duplicate"}
    job.meta.update(attempts=int(job.meta.get("attempts", 0)) + 1, worker=runtime.current_worker(),
                    seconds_done=0.0, error=None)
    job.save_meta()
    ctx = JobContext(job, conn, stopping=runtime.STOPPING.is_set)
    t0 = time.monotonic()
    outcome, error = "succeeded", None
    try:
        if conn.exists(cancel_key(job.id)):
            raise JobStopped("canceled")
        if job.meta.get("source_url"):   # audio by URL: downloaded here, in the worker, not in the API request
            audio = os.path.join(folder, "audio")
            fetched = fetch_for_job(job.meta["source_url"], audio, settings)
            if fetched:
                try:   # the quota's bytes were unknown at submission
                    quotas.check_bytes(conn, spec.service, job.meta.get("owner"), quotas.Limits.from_settings(settings),
                                       fetched)
                except APIError:
                    os.truncate(audio, 0)
                    raise
                quotas.add_bytes(conn, spec.service, job.id, fetched)
        result = spec.run(os.path.join(folder, "audio"), job.meta.get("params") or {}, ctx)
        save_result(conn, settings, spec.service, job.id, result)
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
        remove_files(conn, settings, spec.service, job.id)
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
    """A job's end: it leaves the quota's active count, the counters, and its webhook when it has a callback_url."""
    service = cast(JobSpec, runtime.SPEC).service   # configured before any job runs or fails
    quotas.finished(conn, service, job.meta.get("owner"), job.id)
    runtime.stat(conn, f"jobs_{outcome}")
    runtime.stat(conn, "job_seconds", seconds)
    url = job.meta.get("callback_url")
    if url:
        payload = {"id": job.id, "object": "transcription.job", "status": outcome,
                   "result_url": f"/v1/jobs/{job.id}/result" if outcome == "succeeded" else None,
                   "error": job.meta.get("error")}
        queue_delivery(conn, service, url, job.meta.get("owner") or "anonymous", payload,
                       int(cast(Any, runtime.SETTINGS).job_ttl))
