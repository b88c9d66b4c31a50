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
from typing import Optional

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from stt_common import APIError, InferenceExecutor, create_app, public_name, receive_audio, upload_limits
from stt_common.jobs import Jobs, mount_jobs, register_job_metrics

from . import __version__
from .engine import WhisperXEngine
from .jobs import job_spec
from .routes import Transcriber, router
from .settings import Settings, cuda_devices, engine_config
from .voice_fields import references_field
from .voice_routes import EnrolledVoices, router as voice_router
from .voice_store import VoiceStore

log = logging.getLogger("whisperx_server")


# ---------------------------------------------------------------- the app

def build_app(settings: Optional[Settings] = None, engine: Optional[WhisperXEngine] = None) -> FastAPI:
    settings = settings or Settings()
    engine = engine or WhisperXEngine(engine_config(settings))
    holder: dict[str, list] = {}
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

    # known speakers' reference clips (data URLs) have a bound of their own beside the other fields' 64 KiB
    bulk = [references_field(int(settings.max_reference_mb * 1024 * 1024))]

    # asynchronous jobs (POST /v1/jobs, stt_common.jobs): the upload lands in the jobs folder directly
    svc.jobs = Jobs(job_spec(settings, engine, cache, store), settings)
    mount_jobs(svc, svc.jobs, lambda request: receive_audio(   # file or file_url (fetched by the job's worker)
        request, settings, fetch_now=False, gate=executor.receiving, bulk=bulk,
        **{**upload_limits(settings), "tmp_dir": settings.jobs_dir}))
    register_job_metrics(svc.metrics, svc.jobs)
    # enrolled voices: POST/GET/DELETE /v1/speakers
    app.state.enrolled_voices = EnrolledVoices(engine, store, executor, settings)
    svc.api.include_router(voice_router)   # behind the API key

    app.state.transcriber = Transcriber(settings, engine, cache, executor, store, svc.metrics, device_check, bulk)
    svc.api.include_router(router)   # behind the API key, like every route of svc.api
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
