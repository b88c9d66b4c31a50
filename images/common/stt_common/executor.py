"""Bounded inference executor: N worker threads, a bounded waiting line, 503 + Retry-After beyond it."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Callable, Iterable, Optional

from .errors import unavailable

_DONE = object()


class InferenceExecutor:
    def __init__(self, max_concurrency: int = 1, max_queue: int = 8, metrics=None, name: str = "inference"):
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_queue = max(0, int(max_queue))
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=name)
        self._sem: Optional[asyncio.Semaphore] = None
        self.running = 0
        self.waiting = 0
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
        return self.running + self.waiting >= self.max_concurrency + self.max_queue

    def check(self) -> None:
        """Refuse early (before reading an upload) when a new request could not even wait in line."""
        if self.full():
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise unavailable(
                f"The server is busy: {self.running} running and {self.waiting} waiting. Retry later.",
                retry_after=self.retry_after(), code="queue_full")

    async def acquire(self) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
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
        self._sem.release()
        self._gauges()

    @asynccontextmanager
    async def slot(self):
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    # -- work ----------------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        async with self.slot():
            t0 = time.monotonic()
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))
            finally:
                self._durations.append(time.monotonic() - t0)

    def stream(self, fn: Callable[..., Iterable[Any]], *args, **kwargs) -> "StreamHandle":
        return StreamHandle(self, partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class StreamHandle:
    """Items of a blocking iterator produced in a worker thread, consumed asynchronously."""

    def __init__(self, ex: InferenceExecutor, factory: Callable[[], Iterable[Any]]):
        self.ex, self.factory = ex, factory
        self._q: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self._started = False
        self._future = None

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

    def cancel(self) -> None:
        self._stop.set()

    async def __aiter__(self) -> AsyncIterator[Any]:
        await self.start()
        try:
            while True:
                ok, item = await self._q.get()
                if not ok:
                    raise item
                if item is _DONE:
                    return
                yield item
        finally:
            self._stop.set()
