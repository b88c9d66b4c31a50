"""Bounded inference executor: N worker threads, a bounded waiting line, 503 + Retry-After beyond it."""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Callable, Iterable, Optional

from .errors import APIError, unavailable

log = logging.getLogger("stt_common.executor")

_DONE = object()


class _Ticket:
    """A place in line taken when a request arrives (before its body is read), used by its job later."""
    __slots__ = ("pending",)

    def __init__(self):
        self.pending = True


_ticket: contextvars.ContextVar[Optional[_Ticket]] = contextvars.ContextVar("stt_ticket", default=None)


class JobStopped(Exception):
    """Raised inside a job by `StopHandle.check()` once the job is cancelled (client gone, time limit)."""


class StopHandle:
    """How one blocking inference run is stopped: a synchronous request's deadline (`STT_REQUEST_TIMEOUT`) and its
    client's hang-up, or a live session's item that is dropped. The engine calls `check()` between segments or
    windows. (Not an asynchronous job: those are RQ jobs, `stt_common.jobs`.)"""

    def __init__(self, request=None, timeout: Optional[float] = None, started: Optional[float] = None):
        self.request = request
        self.timeout = timeout
        self.started = time.monotonic() if started is None else started
        self._stop = threading.Event()
        self.reason: Optional[str] = None

    @property
    def deadline(self) -> Optional[float]:
        return None if self.timeout is None else self.started + self.timeout

    def cancel(self, reason: str) -> None:
        if not self._stop.is_set():
            self.reason = reason
            self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        if self._stop.is_set():
            raise JobStopped(self.reason)

    def error(self) -> APIError:
        if self.reason == "timeout":
            return APIError(503, f"The transcription did not finish within the server's time limit "
                                 f"({self.timeout:g} s) and was stopped: send shorter audio or split it.",
                            type="server_error", code="job_timeout")
        return APIError(499, "The client closed the request; the transcription was stopped.",
                        code="client_disconnected")


class InferenceExecutor:
    def __init__(self, max_concurrency: int = 1, max_queue: int = 8, metrics=None, name: str = "inference",
                 max_uploads: Optional[int] = None):
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_queue = max(0, int(max_queue))
        self.max_uploads = max(1, int(max_uploads)) if max_uploads else self.max_concurrency + self.max_queue
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=name)
        self._sem: Optional[asyncio.Semaphore] = None
        self.running = 0
        self.waiting = 0
        self.admitted = 0       # requests admitted (body being received, decoded...) not yet waiting/running
        self.uploading = 0      # request bodies being received now
        self._durations: deque = deque(maxlen=20)

    # -- admission ---------------------------------------------------------
    def retry_after(self) -> float:
        avg = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1.0, avg * (self.waiting + 1) / self.max_concurrency)

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.in_progress.set(self.running)

    def full(self) -> bool:
        return self.running + self.waiting + self.admitted >= self.max_concurrency + self.max_queue

    def check(self) -> None:
        """Refuse early (before reading an upload) when a new request could not even wait in line."""
        if self.full():
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise unavailable(
                f"The server is busy: {self.running} running and {self.waiting + self.admitted} waiting. "
                f"Retry later.", retry_after=self.retry_after(), code="queue_full")

    @asynccontextmanager
    async def admit(self):
        """Take a place in line for this request before its body is read (503 queue_full at once when
        there is none); the request's later `run`/`stream` uses that place instead of queueing again."""
        self.check()
        t = _Ticket()
        self.admitted += 1
        token = _ticket.set(t)
        try:
            yield t
        finally:
            _ticket.reset(token)
            if t.pending:
                t.pending = False
                self.admitted -= 1

    @asynccontextmanager
    async def receiving(self):
        """Bound the request bodies received at once (each holds a socket, a temp file and parser state)."""
        if self.uploading >= self.max_uploads:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise unavailable(f"The server is receiving {self.uploading} uploads already. Retry later.",
                              retry_after=max(1.0, self.retry_after() / 2), code="too_many_uploads")
        self.uploading += 1
        try:
            yield
        finally:
            self.uploading -= 1

    def idle(self) -> bool:
        """A worker thread is free and nobody waits for one: work started now runs at once and delays no one."""
        return self.running < self.max_concurrency and self.waiting == 0

    async def acquire(self, bounded: bool = True) -> None:
        """Wait for a slot. `bounded=False` skips the waiting line's bound (no 503 queue_full): for callers that
        bound their own work, such as live transcription sessions (at most one decode each)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        t = _ticket.get()
        if t is not None and t.pending:   # admitted earlier: its place in line is already counted
            t.pending = False
            self.admitted -= 1
        elif bounded:
            self.check()
        self.waiting += 1
        self._gauges()
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self._gauges()

    def release(self) -> None:
        self.running -= 1
        assert self._sem is not None   # released after acquire(), which made it
        self._sem.release()
        self._gauges()

    @asynccontextmanager
    async def slot(self, bounded: bool = True):
        await self.acquire(bounded)
        try:
            yield
        finally:
            self.release()

    # -- work ----------------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args, job: Optional[StopHandle] = None, bounded: bool = True,
                  **kwargs) -> Any:
        """Run `fn` in a worker thread. With a `job`, the job is cancelled when its request's client goes
        away or its time limit passes (`fn` must call `job.check()` between units of work). `job` is not
        passed on to `fn`: bind it into `fn` yourself (a closure, functools.partial). `bounded`: as `acquire`."""
        if job is None:
            async with self.slot(bounded):
                t0 = time.monotonic()
                try:
                    return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))
                finally:
                    self._durations.append(time.monotonic() - t0)
        await self.acquire(bounded)
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()

        def done(_f):
            self._durations.append(time.monotonic() - t0)
            loop.call_soon_threadsafe(self.release)

        try:
            if job.deadline is not None and time.monotonic() >= job.deadline:
                job.cancel("timeout")
                raise job.error()
            cfut = self._pool.submit(partial(fn, *args, **kwargs))
        except BaseException:
            self.release()
            raise
        cfut.add_done_callback(done)   # the slot is free when the thread is, not when we answer
        fut = asyncio.wrap_future(cfut)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "never retrieved"
        try:
            while not fut.done():
                wait = 0.5
                if job.deadline is not None:
                    wait = max(0.0, min(wait, job.deadline - time.monotonic()))
                await asyncio.wait({fut}, timeout=wait)
                if fut.done():
                    break
                if job.deadline is not None and time.monotonic() >= job.deadline:
                    job.cancel("timeout")
                elif job.request is not None and await job.request.is_disconnected():
                    job.cancel("disconnected")
                if job.cancelled:
                    self._count_stop(job.reason)
                    # the job stops at its next segment/batch/window: wait for that, since the caller frees
                    # what the thread still reads (the decoded audio) as soon as this returns
                    await asyncio.wait({fut})
                    raise job.error()
            try:
                return fut.result()
            except JobStopped:
                raise job.error() from None
        except asyncio.CancelledError:
            job.cancel("disconnected")
            raise

    def _count_stop(self, reason: Optional[str]) -> None:
        log.info("job stopped: %s", reason)
        if self.metrics is not None and hasattr(self.metrics, "jobs_stopped"):
            self.metrics.jobs_stopped.labels(reason or "unknown").inc()

    def stream(self, fn: Callable[..., Iterable[Any]], *args, job: Optional[StopHandle] = None, **kwargs) -> "StreamHandle":
        """Items of `fn`'s iterator as they come (see StreamHandle); with a `job`, as `run`: its time limit ends
        the stream with the job's error, a hang-up cancels it (`fn` should call `job.check()` between items)."""
        return StreamHandle(self, partial(fn, *args, **kwargs), job=job)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class StreamHandle:
    """Items of a blocking iterator produced in a worker thread, consumed asynchronously.

    With a `job`: past its deadline the consumer gets the job's error (503 job_timeout) at once, without
    waiting for the next item, and the job is cancelled; a client that goes away (the request disconnected,
    polled while waiting, or the consumer cancelled or closed) cancels it too. Either way the producer stops
    at its next item (or the next `job.check()` inside it), and the slot is free when its thread is."""

    POLL_S = 0.5   # how often a waiting consumer asks whether its client is still there

    def __init__(self, ex: InferenceExecutor, factory: Callable[[], Iterable[Any]], job: Optional[StopHandle] = None):
        self.ex, self.factory, self.job = ex, factory, job
        self._q: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self._started = False
        self._future: Optional[Future] = None

    async def start(self) -> "StreamHandle":
        """Admission (may raise the 503) and wait for a slot; then the producer starts."""
        if self._started:
            return self
        await self.ex.acquire()
        self._started = True
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()

        def produce():
            try:
                for item in self.factory():
                    if self._stop.is_set():
                        break
                    loop.call_soon_threadsafe(self._q.put_nowait, (True, item))
                loop.call_soon_threadsafe(self._q.put_nowait, (True, _DONE))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(self._q.put_nowait, (False, e))

        def finished(_f):
            self.ex._durations.append(time.monotonic() - t0)
            loop.call_soon_threadsafe(self.ex.release)

        try:
            self._future = self.ex._pool.submit(produce)
        except BaseException:
            self.ex.release()
            raise
        self._future.add_done_callback(finished)
        return self

    def cancel(self, reason: Optional[str] = None) -> None:
        """Stop the producer at its next item; with a `reason` ("disconnected", "timeout") the job is cancelled
        for it and counted (stt_jobs_stopped_total), once."""
        self._stop.set()
        if reason and self.job is not None and not self.job.cancelled:
            self.job.cancel(reason)
            self.ex._count_stop(reason)

    async def _next(self):
        job = self.job
        if job is None or (job.deadline is None and job.request is None):
            return await self._q.get()
        while True:
            wait = self.POLL_S
            if job.deadline is not None:
                wait = min(wait, job.deadline - time.monotonic())
            if wait > 0:
                try:
                    return await asyncio.wait_for(self._q.get(), wait)
                except asyncio.TimeoutError:
                    pass
            if not self._q.empty():
                return self._q.get_nowait()
            if job.deadline is not None and time.monotonic() >= job.deadline:
                self.cancel("timeout")
                raise job.error()
            if job.request is not None and await job.request.is_disconnected():
                self.cancel("disconnected")
                raise job.error()

    async def __aiter__(self) -> AsyncIterator[Any]:
        await self.start()
        try:
            while True:
                ok, item = await self._next()
                if not ok:
                    if isinstance(item, JobStopped) and self.job is not None:
                        raise self.job.error() from None
                    raise item
                if item is _DONE:
                    return
                yield item
        except (GeneratorExit, asyncio.CancelledError):
            self.cancel("disconnected")   # the consumer (the client's response) went away mid-stream
            raise
        finally:
            self._stop.set()
