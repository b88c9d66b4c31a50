"""The WhisperX server's routes on the shared stt_common glue.

- ``POST /transcribe``: the runbook's contract (file, model, language, diarize) plus min/max/num_speakers,
  align, OpenAI's prompt and temperature, and response_format json|srt|vtt|text.
- ``POST /v1/audio/transcriptions``: OpenAI-compatible, plus ``response_format=diarized_json``.
- ``/health``, ``/metrics``, ``/docs``, OpenAI-shaped errors and optional API keys come from stt_common.
"""
from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from functools import partial
from typing import Optional

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from stt_common import (APIError, InferenceExecutor, StopHandle, TranscriptionForm, check_language, create_app,
                        model_languages, public_name, receive_audio, upload_limits)
from stt_common.jobs import Jobs, jobs_routes, owner_of, register_job_metrics

from . import __version__
from .audio import decode_to_memmap
from .engine import WhisperXEngine, check_speaker_hints
from .forms import (EXTRA_DOC, OPENAI_FORMATS, TRANSCRIBE_FORMATS, form_bool, form_int, openai_model_and_diarize,
                    transcribe_openapi, wants_diarization)
from .jobs import job_spec
from .responses import openai_response, transcribe_response
from .settings import Settings, cuda_devices, engine_config
from .voice_fields import VoiceRequest, parse_voice_fields, references_field
from .voice_routes import voice_routes
from .voice_store import VoiceStore

log = logging.getLogger("whisperx_server")


# ---------------------------------------------------------------- the app

def build_app(settings: Optional[Settings] = None, engine: Optional[WhisperXEngine] = None) -> FastAPI:
    settings = settings or Settings()
    engine = engine or WhisperXEngine(engine_config(settings))
    holder = {}
    # device=cuda without a GPU: said once, on /health and in every answer, never retried (images/README.md, "GPU")
    device_problem = settings.device_problem(cuda_devices)

    def device_check(*_):
        if device_problem:
            raise APIError(503, device_problem, code="device_unavailable")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        cache.start_reaper()

        async def load_default():
            if device_problem:
                log.error("%s", device_problem)
                svc.fail(device_problem, code="device_unavailable")
                return
            # what a request needs first, side by side: the ASR model (retried with backoff until it loads: /health
            # is 503 meanwhile, 200 as soon as it works) and the diarization backend, warm, so that the first
            # diarized request does not pay for it (and a wrong HF token or model conditions are said at startup);
            # each phase's end in stt_startup_seconds
            async def asr():
                await cache.keep_loading_default(svc.fail, svc.recover)
                svc.metrics.startup("asr_model")

            async def diarizer():
                try:
                    await run_in_threadpool(engine.check_diarization)
                    svc.metrics.startup("diarizer")
                    log.info("diarization backend %s ready", engine.diarization_backend())
                except Exception as e:  # noqa: BLE001 - diarized requests answer the same error
                    log.warning("diarization is not available: %s", getattr(e, "message", None) or e)
            await asyncio.gather(asr(), diarizer())
            try:   # alignment's sentence data: only aligned requests read it
                from .punkt_data import ensure_punkt_tab
                await run_in_threadpool(ensure_punkt_tab)
            except Exception as e:  # noqa: BLE001 - alignment degrades without it
                log.warning("punkt data unavailable: %s", e)

        holder["tasks"] = [asyncio.ensure_future(load_default())]
        try:
            yield
        finally:
            for t in holder["tasks"]:
                t.cancel()
            executor.shutdown()
            await cache.close()

    app, svc = create_app(settings, title="WhisperX", version=__version__, lifespan=lifespan, description=(
        "WhisperX speech-to-text: batched faster-whisper ASR, wav2vec2 word alignment and speaker diarization "
        "(pyannote with HF_TOKEN, an offline backend without). `POST /transcribe` keeps the runbook's contract; "
        "`POST /v1/audio/transcriptions` is OpenAI-compatible and adds `diarized_json`."))
    svc.metrics.startup("import")   # the process started, its modules imported, the app about to serve
    cache = engine.cache   # the one model manager: ASR, alignment and diarization models
    cache.metrics = svc.metrics
    if device_problem:
        cache.loader = device_check   # every model load (requests, job submissions) answers the device problem
    executor = InferenceExecutor(settings.max_concurrency, settings.max_queue, metrics=svc.metrics,
                                 max_uploads=settings.max_uploads)
    svc.ready = lambda: cache.is_loaded(None)
    svc.details = lambda: {
        "model": public_name(settings.model), "device": engine.cfg.device, "compute_type": engine.cfg.compute_type,
        "batch_size": engine.cfg.batch_size, "models_loaded": [public_name(k) for k in cache.loaded()],
        "diarization_backend": engine.diarization_backend(),
        "version": __version__}
    app.state.engine, app.state.cache, app.state.executor = engine, cache, executor

    store = VoiceStore(settings.speakers_dir, settings.max_voices)

    async def run(upload, job, *, model, language, align, diarize, num_speakers, min_speakers, max_speakers,
                  prompt=None, temperature=0.0, voices: VoiceRequest | None = None, caller: str = "anonymous"):
        voices = voices if voices is not None else VoiceRequest()
        # validate cheap things before decoding minutes of audio
        device_check()
        check_speaker_hints(num_speakers, min_speakers, max_speakers)
        cache.key(model)  # 404 on an unknown model before anything heavy
        enrolled = []
        if diarize:        # a missing/invalid HF token answers before the upload is decoded or ASR runs
            await run_in_threadpool(engine.check_diarization)
            if voices.enrolled:   # an unknown name too
                enrolled = await run_in_threadpool(store.voices, caller, voices.enrolled, engine.voice_embedder().id)
        async with cache.use(model) as asr:   # loaded before decoding: the language is checked against it
            language = check_language(language, model_languages(asr), f"'{public_name(model or settings.model)}'")
            # decoding stops at STT_MAX_AUDIO_SECONDS (413): the decoded copy on disk stays bounded
            audio = await run_in_threadpool(decode_to_memmap, upload.path, settings.tmp_dir,
                                            settings.max_audio_seconds)
            try:
                upload.cleanup()  # the decoded copy is all we need now
                # the executor takes `job` for itself (cancels it on hang-up or time limit): the engine gets it
                # too, through the call, to stop at its next check
                work = partial(engine.run, audio.array, asr=asr, model=model, language=language, align=align,
                               diarize=diarize, num_speakers=num_speakers, min_speakers=min_speakers,
                               max_speakers=max_speakers, prompt=prompt, temperature=temperature,
                               voices=enrolled, reference_clips=voices.clips, speaker_threshold=voices.threshold,
                               job=job)
                result = await executor.run(work, job=job)
                svc.metrics.audio_seconds.labels("transcribe").inc(result.get("duration") or 0.0)
                return result
            finally:
                await run_in_threadpool(audio.close)

    # known speakers' reference clips (data URLs) have a bound of their own beside the other fields' 64 KiB
    bulk = [references_field(int(settings.max_reference_mb * 1024 * 1024))]

    def receive(request: Request):
        # the audio as a file part, or its URL in file_url (fetched here, under the same limits)
        return receive_audio(request, settings, gate=executor.receiving, bulk=bulk, **upload_limits(settings))

    async def voice_fields(fields) -> VoiceRequest:
        return await run_in_threadpool(parse_voice_fields, fields)   # decodes the reference clips

    # asynchronous jobs (POST /v1/jobs, stt_common.jobs): the upload lands in the jobs folder directly
    svc.jobs = Jobs(job_spec(settings, engine, cache, store), settings)
    jobs_routes(svc, svc.jobs, lambda request: receive_audio(   # file or file_url (fetched by the job's worker)
        request, settings, fetch_now=False, gate=executor.receiving, bulk=bulk,
        **{**upload_limits(settings), "tmp_dir": settings.jobs_dir}))
    register_job_metrics(svc.metrics, svc.jobs)
    # enrolled voices: POST/GET/DELETE /v1/speakers
    voice_routes(svc, engine, store, executor, settings)

    @svc.api.post("/transcribe", tags=["whisperx"], summary="Transcribe with alignment and speaker labels",
                  openapi_extra=transcribe_openapi())
    async def transcribe(request: Request):
        job = StopHandle(request, settings.request_timeout)
        async with executor.admit(), receive(request) as up:   # a place in line before the body is read
            form = TranscriptionForm.parse(up.fields, allowed_formats=TRANSCRIBE_FORMATS, allow_stream=False)
            f = up.fields
            voices = await voice_fields(f)
            result = await run(up, job, model=form.model, language=form.language, align=form_bool(f, "align", True),
                               diarize=wants_diarization(f, bool(voices), False),
                               num_speakers=form_int(f, "num_speakers"),
                               min_speakers=form_int(f, "min_speakers"), max_speakers=form_int(f, "max_speakers"),
                               prompt=form.prompt, temperature=form.temperature, voices=voices,
                               caller=owner_of(request))
        return transcribe_response(result, form.response_format)

    @svc.api.post("/v1/audio/transcriptions", tags=["openai"], summary="OpenAI-compatible transcription",
                  openapi_extra=TranscriptionForm.openapi_body(extra_properties=EXTRA_DOC, formats=OPENAI_FORMATS,
                                                               stream=False))
    async def openai_transcriptions(request: Request):
        job = StopHandle(request, settings.request_timeout)
        async with executor.admit(), receive(request) as up:
            form = TranscriptionForm.parse(up.fields, allowed_formats=OPENAI_FORMATS, allow_stream=False)
            f = up.fields
            voices = await voice_fields(f)
            model, diarize = openai_model_and_diarize(form, f, bool(voices))
            align = form_bool(f, "align", True)
            result = await run(up, job, model=model, language=form.language, align=align, diarize=diarize,
                               num_speakers=form_int(f, "num_speakers"), min_speakers=form_int(f, "min_speakers"),
                               max_speakers=form_int(f, "max_speakers"), prompt=form.prompt,
                               temperature=form.temperature, voices=voices, caller=owner_of(request))
        return openai_response(result, form)

    svc.mount()
    return app


def main() -> None:
    import uvicorn
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    settings = Settings()
    settings.check_access()
    app = build_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=True)
