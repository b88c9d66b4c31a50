"""What a service plugs in (`JobSpec`) and what its `run` gets: a `RunContext`, which is a `JobContext` in a worker of
the front and a `remote.RemoteContext` on a worker host."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, Generic, List, Optional, Protocol, Sequence, TypeVar

from fastapi.responses import Response

from ..dependencies import describe_error, is_redis_failure
from ..executor import JobStopped
from .keys import cancel_key, finished_key

log = logging.getLogger("stt_common.jobs")

PROGRESS_EVERY_S = 1.0  # progress is written to Redis at most this often


class RunContext(Protocol):
    """What `JobSpec.run` may use of the context it is handed, wherever the job runs: the front's worker hands a
    `JobContext` (Redis behind it), a worker host a `remote.RemoteContext` (the link behind it)."""

    def set_total(self, seconds: float) -> None:
        """The audio's length, once known (the status shows progress against it)."""

    def progress(self, seconds_done: float, force: bool = False) -> None:
        """Seconds of audio done so far (saved at most every PROGRESS_EVERY_S unless `force`)."""

    def check(self) -> None:
        """Raise JobStopped once the job must stop (canceled, finished elsewhere, its worker stopping)."""


# what a spec's run takes: RunContext for a service's own spec (it runs on the front and on worker hosts alike);
# JobContext for the relay's, which follows its job in Redis and so runs on the front only (relay.remote_run)
Context = TypeVar("Context", bound=RunContext)


@dataclass
class JobSpec(Generic[Context]):
    service: str                                             # queue stt-<service>
    formats: Sequence[str]                                   # result formats
    prepare: Callable[[Dict[str, List[str]], str], Awaitable[dict]]   # API: the form and its caller -> job parameters
    run: Callable[[str, dict, Context], dict]                # worker: audio path, parameters, context -> JSON result
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
