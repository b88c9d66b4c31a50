"""The FastAPI app: OpenAI's /v1/audio/transcriptions and /translations, /v1/models, plus stt_common's glue."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stt_common import (APIError, InferenceExecutor, StopHandle, ModelCache, Transcript, TranscriptionForm, check_language,
                        check_text, create_app, error_body, iter_audio_chunks, join_text, model_languages,
                        public_name, receive_audio, render_transcript, upload_limits)

from stt_common.jobs import Jobs, jobs_routes, register_job_metrics

from . import __version__
from .engine import LANGUAGE_NAMES, Info, ModelNames, Options, cuda_devices, load_model, transcribe_chunks
from .jobs import FORMATS, job_spec
from .realtime.routes import Hub, realtime_routes
from .settings import FasterSettings

log = logging.getLogger("faster_server")


def _open_chunks(path: str, seconds: float, max_seconds: float):
    """Decode the first chunk now (undecodable input fails here, as a 400); the rest lazily, from the open file.
    Decoding stops with a 413 once past `max_seconds` (then the job ends, whatever it has transcribed)."""
    it = iter_audio_chunks(path, seconds, max_seconds)
    first = next(it)
    return first, it


def _sse(obj: dict) -> bytes:
    return ("data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n").encode()


def build_app(settings: Optional[FasterSettings] = None):
    settings = settings or FasterSettings()
    names = ModelNames(settings)
    state = {}
    # device=cuda without a GPU: said once, on /health and in every answer, never retried (images/README.md, "GPU")
    device_problem = settings.device_problem(cuda_devices)

    @asynccontextmanager
    async def lifespan(app):
        if device_problem:
            log.error("%s", device_problem)
            svc.fail(device_problem, code="device_unavailable")
        else:
            async def load_default():
                await cache.keep_loading_default(svc.fail, svc.recover)
                metrics.startup("asr_model")   # /health 200 from here on
            state["default_load"] = asyncio.ensure_future(load_default())
        cache.start_reaper()
        try:
            yield
        finally:
            if "default_load" in state:
                state["default_load"].cancel()
            await cache.close()
            executor.shutdown()

    app, svc = create_app(
        settings, title="faster-whisper server", version=__version__, lifespan=lifespan,
        description="OpenAI-compatible speech-to-text on faster-whisper (CTranslate2). "
                    "Use the `openai` SDK with `base_url=<this server>/v1`.")
    metrics = svc.metrics
    metrics.startup("import")   # the process started, its modules imported, the app about to serve (/metrics)

    def loader(key):
        if device_problem:
            raise APIError(503, device_problem, code="device_unavailable")
        return load_model(key, settings)

    cache = ModelCache(loader=loader, default=settings.model, ttl=settings.model_ttl,
                       load_timeout=settings.model_load_timeout, metrics=metrics, resolve=names.resolve,
                       max_loaded=settings.max_loaded_models)
    executor = InferenceExecutor(settings.max_concurrency, settings.max_queue, metrics=metrics,
                                 max_uploads=settings.max_uploads)
    realtime = Hub(settings, cache, names, executor, metrics)
    svc.ready = lambda: cache.is_loaded(None)
    svc.details = lambda: {"model": public_name(settings.model),   # public: folder names, never host paths
                           "loaded_models": [public_name(k) for k in cache.loaded()],
                           "running": executor.running, "waiting": executor.waiting,
                           "realtime_sessions": realtime.open}
    app.state.cache, app.state.executor, app.state.names = cache, executor, names
    jobs = app.state.jobs = Jobs(job_spec(settings, names, cache), settings)
    jobs_routes(svc, jobs, lambda request: receive_audio(   # file or file_url (fetched by the job's worker)
        request, settings, fetch_now=False, gate=executor.receiving,
        **{**upload_limits(settings), "tmp_dir": settings.jobs_dir}))
    register_job_metrics(metrics, jobs)
    svc.jobs = jobs
    realtime_routes(app, svc, realtime)   # live transcription: /v1/realtime, its client secrets, /live

    async def handle(request: Request, task: str):
        job = StopHandle(request, settings.request_timeout)   # the time limit counts from the request's arrival
        # a place in line first: a request that would get 503 queue_full writes nothing to disk
        async with executor.admit():
            return await admitted(request, task, job)

    async def admitted(request: Request, task: str, job: StopHandle):
        async with receive_audio(request, settings, gate=executor.receiving, **upload_limits(settings)) as up:
            form = TranscriptionForm.parse(up.fields, allowed_formats=FORMATS, allow_stream=(task == "transcribe"))
            key = names.resolve(form.model)
            model = await cache.get(key)   # before decoding: the language is checked against this model
            language = check_language(form.language, model_languages(model),
                                      f"'{public_name(form.model or names.default_id)}'")
            first, rest = await run_in_threadpool(_open_chunks, up.path, settings.chunk_seconds,
                                                  settings.max_audio_seconds)
        # the upload's name is gone now; the decoder still reads the rest of a long file from its open handle
        chunks = itertools.chain([first], rest)
        opts = Options(task=task, language=language, prompt=form.prompt, temperature=form.temperature,
                       word_timestamps=form.word_timestamps)
        info = Info()

        def work():
            try:
                return list(transcribe_chunks(model, chunks, opts, settings, info, job))
            finally:
                rest.close()

        if form.stream:
            return await stream_response(key, model, chunks, rest, opts, info, task, job)

        t0 = time.perf_counter()
        try:
            async with cache.use(key):
                segments = await executor.run(work, job=job)
        except BaseException:
            try:
                rest.close()
            except ValueError:
                pass  # still running in its thread (stopping at its next segment): it closes it itself
            raise
        _account(task, info, time.perf_counter() - t0)
        transcript = Transcript(text=join_text(segments), segments=segments, task=task,
                                language=LANGUAGE_NAMES.get(info.language, info.language), duration=info.duration)
        return render_transcript(transcript, form.response_format, form.word_timestamps, form.segment_timestamps)

    def _account(task: str, info: Info, seconds: float) -> None:
        metrics.startup("first_inference")
        metrics.audio_seconds.labels(task).inc(info.duration)
        metrics.inference_seconds.labels(task).inc(seconds)

    async def stream_response(key, model, chunks, rest, opts, info, task, job):
        """SSE: one delta event per segment, then done; the job's time limit (STT_REQUEST_TIMEOUT) or a hang-up
        stops the decode at its next segment, a time limit with an error event (503's body: job_timeout)."""
        def produce():
            try:
                yield from transcribe_chunks(model, chunks, opts, settings, info, job)
            finally:
                rest.close()

        handle = executor.stream(produce, job=job)
        try:
            await handle.start()  # a full queue is still a real 503 status here
        except BaseException:
            rest.close()
            raise

        async def events():
            parts = []
            t0 = time.perf_counter()
            try:
                async with cache.use(key):
                    async for seg in handle:
                        delta = seg.text.lstrip() if not parts else seg.text
                        parts.append(delta)
                        yield _sse({"type": "transcript.text.delta", "delta": delta})
                _account(task, info, time.perf_counter() - t0)
                yield _sse({"type": "transcript.text.done", "text": "".join(parts).strip(),
                            "usage": {"type": "duration", "seconds": int(round(info.duration + 0.4999))}})
            except APIError as e:
                if job.reason == "disconnected":
                    return   # nobody to tell
                yield _sse({"type": "error", **e.body()})
            except Exception:  # noqa: BLE001 - the status is already sent: report in-band
                log.exception("stream failed")
                yield _sse({"type": "error", **error_body("The server had an error while transcribing.",
                                                          "server_error", None, "internal_error")})
            finally:
                handle.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @svc.api.post("/v1/audio/transcriptions", tags=["audio"], summary="Transcribe audio (OpenAI-compatible)",
                  openapi_extra=TranscriptionForm.openapi_body(formats=FORMATS))
    async def transcriptions(request: Request):
        return await handle(request, "transcribe")

    @svc.api.post("/v1/audio/translations", tags=["audio"], summary="Translate audio to English (OpenAI-compatible)",
                  openapi_extra=TranscriptionForm.openapi_body(formats=FORMATS, stream=False, language=False))
    async def translations(request: Request):
        return await handle(request, "translate")

    def model_obj(model_id: str, key: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "faster-whisper",
                "loaded": key in cache.loaded(), "default": key == names.default_key}

    @svc.api.get("/v1/models", tags=["models"], summary="Models this server can serve, and which are loaded")
    async def list_models():
        data = []
        for m in names.available():
            try:
                data.append(model_obj(m, names.resolve(m)))
            except APIError:
                continue
        return JSONResponse({"object": "list", "data": data})

    @svc.api.get("/v1/models/{model_id:path}", tags=["models"], summary="One model")
    async def get_model(model_id: str):
        check_text(model_id, "model")
        return JSONResponse(model_obj(model_id, names.resolve(model_id)))

    svc.mount()
    return app
