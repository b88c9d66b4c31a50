"""InferenceExecutor (bounded slots and queue) and ModelCache (shared loads, errors, timeout, TTL)."""
import asyncio
import threading
import time

import pytest

from stt_common import APIError, InferenceExecutor, StopHandle, ModelCache, find_local_model, list_local_models


def test_executor_bounds_and_retry_after():
    async def main():
        ex = InferenceExecutor(max_concurrency=1, max_queue=2)
        gate = threading.Event()
        main_thread = threading.get_ident()
        threads = []

        def job(i):
            threads.append(threading.get_ident())
            gate.wait(5)
            return i

        tasks = [asyncio.ensure_future(ex.run(job, i)) for i in range(5)]
        await asyncio.sleep(0.1)
        assert (ex.running, ex.waiting) == (1, 2)
        done = [t for t in tasks if t.done()]
        assert len(done) == 2
        for t in done:
            e = t.exception()
            assert isinstance(e, APIError) and e.status == 503 and int(e.headers["Retry-After"]) >= 1
        gate.set()
        results = [await t for t in tasks if t not in done]
        assert sorted(results) == [0, 1, 2]
        assert main_thread not in threads
        assert (ex.running, ex.waiting) == (0, 0)
        ex.shutdown()

    asyncio.run(main())


def test_executor_stream():
    async def main():
        ex = InferenceExecutor(1, 0)

        def gen():
            for i in range(3):
                time.sleep(0.01)
                yield i

        h = ex.stream(gen)
        await h.start()
        with pytest.raises(APIError):  # the only slot is taken, no queue
            await ex.run(lambda: None)
        assert [x async for x in h] == [0, 1, 2]
        await asyncio.sleep(0.05)
        assert ex.running == 0

        def bad():
            yield 1
            raise ValueError("x")

        with pytest.raises(ValueError):
            async for _ in ex.stream(bad):
                pass
        ex.shutdown()

    asyncio.run(main())


class _Gone:
    """A request whose client has hung up (what starlette's Request.is_disconnected answers then)."""

    def __init__(self):
        self.gone = False

    async def is_disconnected(self):
        return self.gone


def _slow_segments(job, seen, pause=0.05):
    """A decoder as faster's: a segment every `pause` seconds, the job checked between segments."""
    for i in range(1000):
        job.check()
        seen.append(i)
        time.sleep(pause)
        yield i


def test_stream_time_limit_ends_with_the_job_error_and_frees_the_slot():
    async def main():
        ex = InferenceExecutor(1, 0)
        job, seen = StopHandle(None, timeout=0.3), []
        got = []
        t0 = time.monotonic()
        with pytest.raises(APIError) as err:
            async for x in ex.stream(_slow_segments, job, seen, job=job):
                got.append(x)
        assert err.value.status == 503 and err.value.code == "job_timeout"
        assert time.monotonic() - t0 < 1.0 and got            # at the limit, not at the decoder's end
        for _ in range(50):                                     # the decode stops at its next segment
            if ex.running == 0:
                break
            await asyncio.sleep(0.02)
        assert ex.running == 0 and job.reason == "timeout" and len(seen) < 20
        ex.shutdown()

    asyncio.run(main())


def test_stream_hang_up_stops_the_producer():
    async def main():
        ex = InferenceExecutor(1, 0)
        # the client goes away while the consumer waits for the next segment (polled)
        req = _Gone()
        job, seen = StopHandle(req, timeout=None), []
        ex_stream = ex.stream(_slow_segments, job, seen, 0.2, job=job)
        ex_stream.POLL_S = 0.05
        it = ex_stream.__aiter__()
        assert await it.__anext__() == 0
        req.gone = True
        with pytest.raises(APIError) as err:
            await it.__anext__()
        assert err.value.code == "client_disconnected" and job.reason == "disconnected"
        # the consumer itself cancelled (starlette cancels the response when the client leaves)
        job2, seen2 = StopHandle(None, timeout=None), []

        async def consume():
            async for _ in ex.stream(_slow_segments, job2, seen2, job=job2):
                pass
        for _ in range(50):
            if ex.running == 0:
                break
            await asyncio.sleep(0.05)
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert job2.reason == "disconnected"
        n = len(seen2)
        await asyncio.sleep(0.3)
        assert len(seen2) <= n + 1 and ex.running == 0   # stopped at its next segment
        ex.shutdown()

    asyncio.run(main())


def test_model_cache_loads_once_and_reaps():
    calls = []

    def loader(name):
        calls.append(name)
        time.sleep(0.05)
        if name == "broken":
            raise OSError("no such weights")
        return {"name": name}

    async def main():
        c = ModelCache(loader, default="base", ttl=0.01, load_timeout=5)
        models = await asyncio.gather(*[c.get("small") for _ in range(5)], c.load_default())
        assert calls.count("small") == 1 and models[0] is models[1]
        with pytest.raises(APIError) as e:
            await c.get("broken")
        assert e.value.status == 404 and "no such weights" in e.value.message
        async with c.use("small"):
            await asyncio.sleep(0.02)
            assert c.reap() == []  # in use
        await asyncio.sleep(0.02)
        assert c.reap() == ["small"] and c.loaded() == ["base"]  # the default stays
        await c.close()

    asyncio.run(main())


def test_model_cache_load_timeout():
    release = threading.Event()

    def slow(name):
        release.wait(5)
        return name

    async def main():
        c = ModelCache(slow, default="d", load_timeout=0.1)
        with pytest.raises(APIError) as e:
            await c.get("x")
        assert e.value.status == 503 and "Retry-After" in e.value.headers
        release.set()
        await asyncio.sleep(0.1)
        assert c.is_loaded("x")  # kept loading in the background
        await c.close()

    asyncio.run(main())


def test_local_models(tmp_path):
    (tmp_path / "faster-whisper-tiny").mkdir()
    (tmp_path / "models--Systran--faster-whisper-base" / "snapshots" / "abc").mkdir(parents=True)
    assert find_local_model("Systran/faster-whisper-tiny", str(tmp_path)).endswith("faster-whisper-tiny")
    assert find_local_model("Systran/faster-whisper-base", str(tmp_path)).endswith("abc")
    assert find_local_model("../etc", str(tmp_path)) is None
    assert find_local_model("/etc", str(tmp_path)) is None
    assert list_local_models(str(tmp_path)) == ["faster-whisper-tiny", "Systran/faster-whisper-base"]


def test_model_cache_helper_models_from_worker_threads():
    """Helper models (a pipeline's alignment or diarization model) share the cache with the request-selected
    ones: loaded once from any thread, listed together, reaped by the same TTL, not counted toward the cap."""
    calls = []

    def helper():
        calls.append("align")
        time.sleep(0.05)
        return "ALIGN"

    async def main():
        c = ModelCache(lambda name: name.upper(), default="base", ttl=0.05, max_loaded=2)
        await c.load_default()
        loop = asyncio.get_running_loop()
        got = await asyncio.gather(*[loop.run_in_executor(None, c.load, "align:en", helper, "align")
                                     for _ in range(4)])
        assert got == ["ALIGN"] * 4 and calls == ["align"]
        assert c.load("small") == "SMALL"          # blocking load of a request-selected model
        assert sorted(c.loaded()) == ["align:en", "base", "small"]
        with pytest.raises(APIError) as e:         # the cap counts ASR models only: base + small
            async with c.use("small"):
                await c.get("medium")
        assert e.value.status == 503 and e.value.code == "too_many_models"
        with pytest.raises(OSError):
            c.load("diarize:x", lambda: (_ for _ in ()).throw(OSError("gone")), kind="diarize")
        assert "diarize:x" not in c.loaded()       # a failed load caches nothing
        await asyncio.sleep(0.06)
        assert sorted(c.reap()) == ["align:en", "small"] and c.loaded() == ["base"]
        await c.close()

    asyncio.run(main())
