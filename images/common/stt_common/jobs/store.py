"""Job folders on the front's disk: the audio, the result beside it, their removal (counted against the quotas)
and the sweep of expired folders (`python -m stt_common.jobs.sweep`, run by a host timer)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Optional

from ..dependencies import is_disk_full
from . import quotas
from .keys import result_key

log = logging.getLogger("stt_common.jobs")


def job_folder(settings, job_id: str) -> str:
    return os.path.join(settings.jobs_dir, job_id)


def save_result(conn, settings, service: str, job_id: str, result: dict) -> int:
    """The result beside the audio (written whole, then renamed); its bytes count against the caller's quota.
    When the disk is full, the finished job is not lost: its result goes to Redis, expiring with the job."""
    folder = job_folder(settings, job_id)
    tmp = os.path.join(folder, "result.json.part")
    final = os.path.join(folder, "result.json")
    before = os.path.getsize(final) if os.path.exists(final) else 0   # a late attempt's equal result
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        os.replace(tmp, final)
    except OSError as e:
        try:
            os.unlink(tmp)   # nothing half-written stays behind
        except FileNotFoundError:
            pass
        if not is_disk_full(e):
            raise
        log.warning("job %s: no room for its result on disk (%s): kept in Redis", job_id, e.strerror)
        data = json.dumps(result, ensure_ascii=False)
        conn.set(result_key(job_id), data, ex=int(settings.job_ttl))
        quotas.add_bytes(conn, service, job_id, len(data.encode()))
        return len(data.encode())
    size = os.path.getsize(final)
    quotas.add_bytes(conn, service, job_id, size - before)
    return size


def load_result(conn, settings, job_id: str) -> Optional[dict]:
    """A finished job's result; None once it has expired. It is in Redis when the disk was full as it finished
    (and for results a worker host stored there before results went through the front, until they expire)."""
    try:
        with open(os.path.join(job_folder(settings, job_id), "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        stored = conn.get(result_key(job_id))
        return None if stored is None else json.loads(stored)


def remove_files(conn, settings, service: str, job_id: str) -> None:
    """A job's audio and result go; so do their bytes from the quotas."""
    shutil.rmtree(job_folder(settings, job_id), ignore_errors=True)
    conn.delete(result_key(job_id))
    quotas.release(conn, service, job_id)


def sweep_files(conn, settings, service: str, now: Optional[float] = None) -> int:
    """Delete job folders past the retention time whose job is not queued or running, and release the bytes of
    jobs whose folder is gone. Returns the folders removed."""
    from rq.exceptions import NoSuchJobError

    from .codec import fetch
    from .status import job_state

    removed = 0
    cutoff = (now or time.time()) - settings.job_ttl
    try:
        names = os.listdir(settings.jobs_dir)
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(settings.jobs_dir, name)
        try:
            if not os.path.isdir(path) or os.stat(path).st_mtime > cutoff:
                continue
            try:
                if job_state(fetch(conn, name)) in ("queued", "running"):
                    continue
            except NoSuchJobError:
                pass
            remove_files(conn, settings, service, name)
            removed += 1
        except (FileNotFoundError, ValueError):
            continue
    for job_id in quotas.stored_jobs(conn, service):   # counted, but its folder is gone (removed by hand)
        if not os.path.isdir(job_folder(settings, job_id)):
            quotas.release(conn, service, job_id)
    return removed
