"""The FastAPI app: OpenAI's /v1/audio/transcriptions and /translations, /v1/models, plus stt_common's glue."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Optional

from stt_common import APIError, InferenceExecutor, ModelCache, create_app, public_name, receive_audio, upload_limits

from stt_common.jobs import Jobs, mount_jobs, register_job_metrics

from . import __version__
from .engine import ModelNames, cuda_devices, load_model
from .jobs import job_spec
from .realtime.routes import Hub, live_router, router as realtime_router
from .routes import Transcriber, router
from .settings import FasterSettings

log = logging.getLogger("faster_server")


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
    jobs = Jobs(job_spec(settings, names, cache), settings)
    mount_jobs(svc, jobs, lambda request: receive_audio(   # file or file_url (fetched by the job's worker)
        request, settings, fetch_now=False, gate=executor.receiving,
        **{**upload_limits(settings), "tmp_dir": settings.jobs_dir}))
    register_job_metrics(metrics, jobs)
    svc.jobs = jobs
    # live transcription: /v1/realtime and /live on the app, the client secrets behind the API key
    app.state.realtime = realtime
    app.include_router(live_router)
    svc.api.include_router(realtime_router)

    app.state.transcriber = Transcriber(settings, names, cache, executor, metrics)
    svc.api.include_router(router)   # behind the API key, like every route of svc.api
    svc.mount()
    return app
