"""The faster service's own routes: OpenAI's /v1/audio/transcriptions and /translations, /v1/models. They live on
`router` (mounted by app.build_app on the service's authenticated router); what they share with the rest of the app
(settings, model names, the model cache, the inference executor, metrics) comes from `Depends(transcriber)`."""
from __future__ import annotations

import itertools
import json
import logging
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stt_common import (APIError, InferenceExecutor, Metrics, ModelCache, StopHandle, Transcript, TranscriptionForm,
                        check_language, check_text, error_body, iter_audio_chunks, join_text, model_languages,
                        public_name, receive_audio, render_transcript, upload_limits)

from .engine import LANGUAGE_NAMES, Info, ModelNames, Options, transcribe_chunks
from .jobs import FORMATS
from .settings import FasterSettings

log = logging.getLogger("faster_server")
router = APIRouter()


def _open_chunks(path: str, seconds: float, max_seconds: float):
    """Decode the first chunk now (undecodable input fails here, as a 400); the rest lazily, from the open file.
    Decoding stops with a 413 once past `max_seconds` (then the job ends, whatever it has transcribed)."""
    it = iter_audio_chunks(path, seconds, max_seconds)
    first = next(it)
    return first, it


def _sse(obj: dict) -> bytes:
    return ("data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n").encode()


class Transcriber:
    """What the routes below share, made once by build_app and kept in `app.state.transcriber`."""

    def __init__(self, settings: FasterSettings, names: ModelNames, cache: ModelCache, executor: InferenceExecutor,
                 metrics: Metrics):
        self.settings, self.names, self.cache, self.executor, self.metrics = settings, names, cache, executor, metrics

    async def handle(self, request: Request, task: str):
        job = StopHandle(request, self.settings.request_timeout)   # the time limit counts from the request's arrival
        # a place in line first: a request that would get 503 queue_full writes nothing to disk
        async with self.executor.admit():
            return await self.admitted(request, task, job)

    async def admitted(self, request: Request, task: str, job: StopHandle):
        settings, names, cache, executor = self.settings, self.names, self.cache, self.executor
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
            return await self.stream_response(key, model, chunks, rest, opts, info, task, job)

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
        self.account(task, info, time.perf_counter() - t0)
        transcript = Transcript(text=join_text(segments), segments=segments, task=task,
                                language=LANGUAGE_NAMES.get(info.language, info.language), duration=info.duration)
        return render_transcript(transcript, form.response_format, form.word_timestamps, form.segment_timestamps)

    def account(self, task: str, info: Info, seconds: float) -> None:
        self.metrics.startup("first_inference")
        self.metrics.audio_seconds.labels(task).inc(info.duration)
        self.metrics.inference_seconds.labels(task).inc(seconds)

    async def stream_response(self, key, model, chunks, rest, opts, info, task, job):
        """SSE: one delta event per segment, then done; the job's time limit (STT_REQUEST_TIMEOUT) or a hang-up
        stops the decode at its next segment, a time limit with an error event (503's body: job_timeout)."""
        settings, cache = self.settings, self.cache

        def produce():
            try:
                yield from transcribe_chunks(model, chunks, opts, settings, info, job)
            finally:
                rest.close()

        handle = self.executor.stream(produce, job=job)
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
                self.account(task, info, time.perf_counter() - t0)
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

    def model_obj(self, model_id: str, key: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "faster-whisper",
                "loaded": key in self.cache.loaded(), "default": key == self.names.default_key}


def transcriber(request: Request) -> Transcriber:
    return request.app.state.transcriber


@router.post("/v1/audio/transcriptions", tags=["audio"], summary="Transcribe audio (OpenAI-compatible)",
             openapi_extra=TranscriptionForm.openapi_body(formats=FORMATS))
async def transcriptions(request: Request, t: Transcriber = Depends(transcriber)):
    return await t.handle(request, "transcribe")


@router.post("/v1/audio/translations", tags=["audio"], summary="Translate audio to English (OpenAI-compatible)",
             openapi_extra=TranscriptionForm.openapi_body(formats=FORMATS, stream=False, language=False))
async def translations(request: Request, t: Transcriber = Depends(transcriber)):
    return await t.handle(request, "translate")


@router.get("/v1/models", tags=["models"], summary="Models this server can serve, and which are loaded")
async def list_models(t: Transcriber = Depends(transcriber)):
    data = []
    for m in t.names.available():
        try:
            data.append(t.model_obj(m, t.names.resolve(m)))
        except APIError:
            continue
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/models/{model_id:path}", tags=["models"], summary="One model")
async def get_model(model_id: str, t: Transcriber = Depends(transcriber)):
    check_text(model_id, "model")
    return JSONResponse(t.model_obj(model_id, t.names.resolve(model_id)))
