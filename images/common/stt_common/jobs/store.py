"""Where a job's files live: its folder in STT_JOBS_DIR (the audio, the result beside it), the result in Redis for
a worker on another host, the audio fetched from the front by such a worker, and the sweep of expired folders."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.request
from typing import Optional

from ..dependencies import is_disk_full
from .connection import link_ssl_context
from .keys import result_key
from .status import job_state

log = logging.getLogger("stt_common.jobs")


def job_folder(settings, job_id: str) -> str:
    return os.path.join(settings.jobs_dir, job_id)


def save_result(conn, settings, job_id: str, result: dict, remote: bool) -> None:
    """Beside the audio; a worker on another host (no access to the front's disk), or any worker when the disk is
    full, stores it in Redis, expiring with the job."""
    if remote:
        conn.set(result_key(job_id), json.dumps(result, ensure_ascii=False), ex=int(settings.job_ttl))
        return
    folder = job_folder(settings, job_id)
    tmp = os.path.join(folder, "result.json.part")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        os.replace(tmp, os.path.join(folder, "result.json"))
    except OSError as e:
        try:
            os.unlink(tmp)   # nothing half-written stays behind
        except FileNotFoundError:
            pass
        if not is_disk_full(e):
            raise
        # a full disk does not lose a finished job: its result goes where a worker host's goes
        log.warning("job %s: no room for its result on disk (%s): kept in Redis", job_id, e.strerror)
        conn.set(result_key(job_id), json.dumps(result, ensure_ascii=False), ex=int(settings.job_ttl))


def load_result(conn, settings, job_id: str) -> Optional[dict]:
    """A finished job's result, from its folder or from Redis; None once it has expired."""
    try:
        with open(os.path.join(job_folder(settings, job_id), "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        stored = conn.get(result_key(job_id))   # a worker on another host stored it in Redis
        return None if stored is None else json.loads(stored)


def fetch_audio(settings, job, folder: str) -> str:
    """A worker on another host: the job's audio from the front over the link (its token, our certificate)."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, "audio")
    url = f"{settings.jobs_fetch_url.rstrip('/')}/internal/jobs/{job.id}/audio"
    req = urllib.request.Request(url, headers={"X-Job-Token": job.meta.get("audio_token") or "",
                                               "User-Agent": "whisper-platform-worker"})
    with urllib.request.urlopen(req, timeout=60, context=link_ssl_context(settings)) as r, \
            open(path + ".part", "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    os.replace(path + ".part", path)
    return path


def sweep_files(conn, settings, service: str) -> int:
    """Delete job folders past the retention time whose job is not queued or running."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    removed = 0
    cutoff = time.time() - settings.job_ttl
    try:
        names = os.listdir(settings.jobs_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(settings.jobs_dir, name)
        try:
            if os.stat(path).st_mtime > cutoff:
                continue
            try:
                if job_state(RQJob.fetch(name, connection=conn)) in ("queued", "running"):
                    continue
            except NoSuchJobError:
                pass
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except (FileNotFoundError, ValueError):
            continue
    return removed
