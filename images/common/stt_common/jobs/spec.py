"""What a service plugs in (`JobSpec`) and what its `run` gets in the worker (`JobContext`)."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, List, Optional, Sequence

from fastapi.responses import Response

from ..dependencies import describe_error, is_redis_failure
from ..executor import JobStopped
from .keys import cancel_key, finished_key

log = logging.getLogger("stt_common.jobs")

PROGRESS_EVERY_S = 1.0  # progress is written to Redis at most this often


@dataclass
class JobSpec:
    service: str                                             # queue stt-<service>
    formats: Sequence[str]                                   # result formats
    prepare: Callable[[Dict[str, List[str]]], Awaitable[dict]]   # API: validate the form -> job parameters
    run: Callable[[str, dict, "JobContext"], dict]           # worker: audio path, parameters -> JSON result
    render: Callable[[dict, str, dict], Response]            # API: stored result, format, parameters
    warm: Optional[Callable[[], None]] = None                # worker: load the default model at start
    openapi: Optional[dict] = None                           # the multipart body, for /docs and schema tests


class JobContext:
    """Handed to `JobSpec.run` in the worker: progress and cancellation, with the engines' Job interface
    (`check()` between segments/windows raises JobStopped once the job is canceled, finished by another attempt,
    or its worker is asked to stop: `stopping()`, the worker's stop signal; the job then goes back to its queue).

    Progress and the checks are hints: a Redis that does not answer for a moment (restarted, upgraded) costs an
    update or a check, never the job, which ends when its result is stored and claimed."""

    def __init__(self, job, conn, total_seconds: Optional[float] = None,
                 stopping: Callable[[], bool] = lambda: False):
        self.job, self.conn = job, conn
        self.total = total_seconds
        self.stopping = stopping
        self._last_progress = 0.0
        self._last_check = 0.0
        self.reason: Optional[str] = None
        self.attempt = uuid.uuid4().hex   # what claim_finish records for this run of the job

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def _superseded(self) -> None:
        """Never write over the status of a job that another attempt finished (this worker was cut off)."""
        winner = self.conn.get(finished_key(self.job.id))
        if winner is not None and winner.decode() != self.attempt:
            self.reason = "superseded"
            raise JobStopped(self.reason)

    def _save(self, **meta) -> None:
        try:
            self._superseded()
            self.job.meta.update(meta)
            self.job.save_meta()
        except Exception as e:  # noqa: BLE001 - JobStopped and our own bugs go on; Redis away costs the update
            if not is_redis_failure(e):
                raise
            log.warning("job %s: progress not saved (Redis: %s)", self.job.id, describe_error(e))

    def set_total(self, seconds: float) -> None:
        self.total = seconds
        self._save(seconds_total=round(seconds, 2))

    def progress(self, seconds_done: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._save(seconds_done=round(float(seconds_done), 2))

    def check(self) -> None:
        if self.reason is None and self.stopping():
            self.reason = "shutdown"
        now = time.monotonic()
        if self.reason is None and now - self._last_check >= 0.5:
            self._last_check = now
            try:
                if self.conn.exists(cancel_key(self.job.id)):
                    self.reason = "canceled"
                else:
                    winner = self.conn.get(finished_key(self.job.id))
                    if winner is not None and winner.decode() != self.attempt:
                        self.reason = "superseded"
            except Exception as e:  # noqa: BLE001
                if not is_redis_failure(e):
                    raise
        if self.reason:
            raise JobStopped(self.reason)


def claim_finish(conn, job, settings, attempt: str) -> bool:
    """The first attempt to finish a job wins; a late one (its worker was cut off and the job ran elsewhere)
    drops what it has, so the client sees one outcome and one webhook."""
    return bool(conn.set(finished_key(job.id), attempt, nx=True, ex=int(settings.job_ttl)))
