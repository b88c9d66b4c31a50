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
from typing import Literal, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from stt_common import (APIError, InferenceExecutor, Job, Segment, STTSettings, Transcript, TranscriptionForm,
                        Word, bad_request, check_language, create_app, model_languages, public_name, receive_upload,
                        to_diarized_json, to_json, to_srt, to_text, to_verbose_json, to_vtt, upload_limits)
from stt_common.settings import GuardSettings

from . import __version__
from .audio import decode_to_memmap
from .engine import EngineConfig, WhisperXEngine
from .errors import DEFAULT_DIARIZATION_MODEL

log = logging.getLogger("whisperx_server")

TRANSCRIBE_FORMATS = ("json", "srt", "vtt", "text")
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
OPENAI_DEFAULT_ALIASES = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}
OPENAI_DIARIZE_ALIASES = {"gpt-4o-transcribe-diarize"}


def openai_model_and_diarize(form, fields) -> tuple:
    """(model, diarize) of an OpenAI-style form: OpenAI's model names mean our default model, the
    -diarize one with diarization; diarize defaults to on for response_format=diarized_json."""
    model, diarize = form.model, form_bool(fields, "diarize", form.response_format == "diarized_json")
    if model in OPENAI_DEFAULT_ALIASES:
        return None, diarize
    if model in OPENAI_DIARIZE_ALIASES:
        return None, True
    return model, diarize


class Settings(GuardSettings, STTSettings):
    """STT_* environment (images/README.md); the hallucination guards (STT_COMPRESSION_RATIO_THRESHOLD ...) are
    stt_common.settings.GuardSettings, as on the faster service; whisperx-only knobs below. HF_TOKEN is read as
    is."""
    model: str = "base"
    batch_size: int = Field(8, ge=1)
    diarization_backend: str = "auto"
    diarization_model: str = DEFAULT_DIARIZATION_MODEL
    align_models: str = ""          # "en=/models/wav2vec2-en,fr=org/model"
    align_model_dir: Optional[str] = None
    window_seconds: float = Field(1200, gt=30)
    # diarize=true: "words" transcribes with full context and gives each word its speaker, segments cut at speaker
    # changes; "turns" transcribes each speaker turn on its own (no segment spans two speakers; short turns lose
    # their context: bench/README.md, "Diarized transcripts")
    diarize_order: Literal["words", "turns"] = "words"
    # where speech is, for the ASR's 30 s chunks: "silero" (silero-vad's ONNX model, shipped in its wheel) or
    # "pyannote" (whisperx's default segmentation model: about ten times slower on CPU)
    vad: Literal["silero", "pyannote"] = "silero"


def cuda_devices() -> int:
    """GPUs torch sees: 0 without one, without its driver or without the NVIDIA container runtime (also 0 in an
    image built on a CPU-only torch index). The ASR's CTranslate2 uses the cuBLAS/cuDNN of torch's nvidia wheels."""
    import torch
    return torch.cuda.device_count()


def engine_config(settings: Settings, env=os.environ) -> EngineConfig:
    align = {}
    for item in settings.align_models.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            align[k.strip()] = v.strip()
    backend = settings.diarization_backend.strip().lower() or "auto"
    if backend not in ("auto", "pyannote", "offline"):
        raise ValueError("STT_DIARIZATION_BACKEND must be auto, pyannote or offline")
    device = "cuda" if settings.device == "cuda" else "cpu"
    if settings.device == "auto":
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    return EngineConfig(
        default_model=settings.model, device=device,
        compute_type=settings.compute_type or ("float16" if device == "cuda" else "int8"),
        threads=settings.cpu_threads, batch_size=settings.batch_size, models_dir=settings.models_dir,
        model_ttl=settings.model_ttl, model_load_timeout=settings.model_load_timeout,
        max_loaded_models=settings.max_loaded_models, hf_token=(env.get("HF_TOKEN") or "").strip(),
        diarization_backend=backend, diarization_model=settings.diarization_model, align_models=align,
        align_cache_dir=settings.align_model_dir, window_s=settings.window_seconds,
        diarize_order=settings.diarize_order, vad=settings.vad,
        allow_downloads=settings.allow_model_downloads, guards=settings.guards)


# ---------------------------------------------------------------- form helpers

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def form_bool(fields, name: str, default: bool) -> bool:
    v = fields.get(name)
    if not v or not v[-1].strip():
        return default
    s = v[-1].strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise bad_request(f"Invalid value for '{name}': expected true or false.", param=name, code="invalid_value")


def form_int(fields, name: str) -> Optional[int]:
    v = fields.get(name)
    if not v or not v[-1].strip():
        return None
    try:
        return int(v[-1].strip())
    except ValueError:
        raise bad_request(f"Invalid value for '{name}': expected a whole number.", param=name,
                          code="invalid_value") from None


# ---------------------------------------------------------------- result -> writers

def to_transcript(result: dict) -> Transcript:
    segments = []
    for i, s in enumerate(result["segments"]):
        words = [Word(word=w["word"], start=w["start"] if w["start"] is not None else s["start"] or 0.0,
                      end=w["end"] if w["end"] is not None else s["end"] or 0.0, probability=w.get("score"),
                      speaker=w.get("speaker"))
                 for w in s.get("words") or []]
        segments.append(Segment(id=i, start=s["start"] or 0.0, end=s["end"] or 0.0, text=" " + s["text"],
                                words=words or None, speaker=s.get("speaker")))
    text = " ".join(s["text"] for s in result["segments"]).strip()
    return Transcript(text=text, segments=segments, language=result.get("language") or "",
                      duration=result.get("duration") or 0.0)


def info_headers(result: dict) -> dict:
    h = {"X-Alignment": result["alignment"]["status"]}
    if result.get("diarization"):
        h["X-Diarization-Backend"] = result["diarization"]["backend"]
    return h


def transcribe_response(result: dict, fmt: str) -> Response:
    headers = info_headers(result)
    if fmt == "json":
        body = {"segments": result["segments"], "language": result["language"], "duration": result["duration"],
                "alignment": result["alignment"]}
        if "diarization" in result:
            body["diarization"] = result["diarization"]
        return JSONResponse(body, headers=headers)
    t = to_transcript(result)
    if fmt == "srt":
        return PlainTextResponse(to_srt(t), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt", headers=headers)
    return PlainTextResponse(to_text(t), headers=headers)


def openai_response(result: dict, form: TranscriptionForm) -> Response:
    headers = info_headers(result)
    t = to_transcript(result)
    fmt = form.response_format
    if fmt == "json":
        return JSONResponse(to_json(t), headers=headers)
    if fmt == "verbose_json":
        body = to_verbose_json(t, form.word_timestamps, form.segment_timestamps)
        body["alignment"] = result["alignment"]
        if "diarization" in result:
            body["diarization"] = result["diarization"]
        return JSONResponse(body, headers=headers)
    if fmt == "diarized_json":
        return JSONResponse(to_diarized_json(t), headers=headers)
    if fmt == "srt":
        return PlainTextResponse(to_srt(t), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt", headers=headers)
    return PlainTextResponse(to_text(t), headers=headers)


_EXTRA_DOC = {
    "diarize": {"type": "boolean", "default": False, "description": "Label speakers (SPEAKER_00, ...)."},
    "num_speakers": {"type": "integer", "minimum": 1, "description": "Exact number of speakers, if known."},
    "min_speakers": {"type": "integer", "minimum": 1},
    "max_speakers": {"type": "integer", "minimum": 1},
    "align": {"type": "boolean", "default": True,
              "description": "wav2vec2 word alignment; degrades to segment times (and says so) when unavailable."},
    "prompt": {"type": "string", "description": "Text that guides vocabulary and style (names, terms, "
                                                "punctuation), given to the decoder before each chunk of speech."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                    "description": "0: the decoder's fallback ladder (0, 0.2 ... 1.0) that the server's guards "
                                   "climb on a chunk that loops or is unlikely; above 0: sampled at that value."},
}


def _transcribe_openapi() -> dict:
    body = TranscriptionForm.openapi_body(extra_properties=_EXTRA_DOC, formats=TRANSCRIBE_FORMATS, stream=False)
    props = body["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    props["model"]["description"] = ("tiny, base, small, medium, large-v2, large-v3, a HuggingFace repo id or a "
                                     "folder in STT_MODELS_DIR; omitted = the server default")
    props.pop("timestamp_granularities[]", None)
    return body


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

    async def run(upload, job, *, model, language, align, diarize, num_speakers, min_speakers, max_speakers,
                  prompt=None, temperature=0.0):
        # validate cheap things before decoding minutes of audio
        from .engine import check_speaker_hints
        device_check()
        check_speaker_hints(num_speakers, min_speakers, max_speakers)
        cache.key(model)  # 404 on an unknown model before anything heavy
        if diarize:        # a missing/invalid HF token answers before the upload is decoded or ASR runs
            await run_in_threadpool(engine.check_diarization)
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
                               max_speakers=max_speakers, prompt=prompt, temperature=temperature, job=job)
                result = await executor.run(work, job=job)
                svc.metrics.audio_seconds.labels("transcribe").inc(result.get("duration") or 0.0)
                return result
            finally:
                await run_in_threadpool(audio.close)

    def receive(request: Request):
        return receive_upload(request, **upload_limits(settings), gate=executor.receiving())

    # asynchronous jobs (POST /v1/jobs, stt_common.jobs): the upload lands in the jobs folder directly
    from stt_common.jobs import Jobs, jobs_routes, register_job_metrics

    from .jobs import job_spec
    svc.jobs = Jobs(job_spec(settings, engine, cache), settings)
    jobs_routes(svc, svc.jobs, lambda request: receive_upload(
        request, **{**upload_limits(settings), "tmp_dir": settings.jobs_dir}, gate=executor.receiving()))
    register_job_metrics(svc.metrics, svc.jobs)

    @svc.api.post("/transcribe", tags=["whisperx"], summary="Transcribe with alignment and speaker labels",
                  openapi_extra=_transcribe_openapi())
    async def transcribe(request: Request):
        job = Job(request, settings.job_timeout)
        async with executor.admit(), receive(request) as up:   # a place in line before the body is read
            form = TranscriptionForm.parse(up.fields, allowed_formats=TRANSCRIBE_FORMATS, allow_stream=False)
            f = up.fields
            result = await run(up, job, model=form.model, language=form.language, align=form_bool(f, "align", True),
                               diarize=form_bool(f, "diarize", False), num_speakers=form_int(f, "num_speakers"),
                               min_speakers=form_int(f, "min_speakers"), max_speakers=form_int(f, "max_speakers"),
                               prompt=form.prompt, temperature=form.temperature)
        return transcribe_response(result, form.response_format)

    @svc.api.post("/v1/audio/transcriptions", tags=["openai"], summary="OpenAI-compatible transcription",
                  openapi_extra=TranscriptionForm.openapi_body(extra_properties=_EXTRA_DOC, formats=OPENAI_FORMATS,
                                                               stream=False))
    async def openai_transcriptions(request: Request):
        job = Job(request, settings.job_timeout)
        async with executor.admit(), receive(request) as up:
            form = TranscriptionForm.parse(up.fields, allowed_formats=OPENAI_FORMATS, allow_stream=False)
            f = up.fields
            model, diarize = openai_model_and_diarize(form, f)
            align = form_bool(f, "align", True)
            result = await run(up, job, model=model, language=form.language, align=align, diarize=diarize,
                               num_speakers=form_int(f, "num_speakers"), min_speakers=form_int(f, "min_speakers"),
                               max_speakers=form_int(f, "max_speakers"), prompt=form.prompt,
                               temperature=form.temperature)
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
