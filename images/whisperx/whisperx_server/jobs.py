"""WhisperX's plug-in for the asynchronous jobs of stt_common.jobs: the OpenAI fields (prompt and temperature
included) plus diarize, speaker hints and align; validated in the API, run in the worker window by window
(progress after each window, cancel between ASR batches), rendered as the runbook's JSON or any OpenAI format."""
from __future__ import annotations

from typing import Optional

from starlette.concurrency import run_in_threadpool

from stt_common import TranscriptionForm, check_language, model_languages, public_name
from stt_common.jobs import JobSpec, RunContext

from .audio import decode_to_memmap
from .engine import WhisperXEngine, check_speaker_hints
from .forms import EXTRA_DOC, OPENAI_FORMATS, form_bool, form_int, openai_model_and_diarize
from .responses import openai_response, transcribe_response
from .settings import Settings, engine_config
from .voice_fields import parse_voice_fields
from .voices import Voice

# "json" is the runbook's /transcribe JSON (segments with speakers and timed words); the others as OpenAI's
FORMATS = OPENAI_FORMATS


def job_spec(settings: Settings, engine: WhisperXEngine, cache=None, store=None) -> JobSpec[RunContext]:
    """`cache` (the API's ModelCache) validates models and languages in the API; the worker passes none. `store`
    (the API's VoiceStore) gives the caller's enrolled voices."""

    def known_voices(voices, caller: str) -> list:
        """Known speakers as the vectors the job carries to its worker (never a clip's audio)."""
        engine.check_diarization()
        found = engine.embed_references(voices.clips)
        if voices.enrolled:
            found += store.voices(caller, voices.enrolled, engine.voice_embedder().id)
        return [v.as_param() for v in found]

    async def prepare(fields, caller: str) -> dict:
        form = TranscriptionForm.parse(fields, allowed_formats=FORMATS, allow_stream=False)
        voices = await run_in_threadpool(parse_voice_fields, fields)
        model, diarize = openai_model_and_diarize(form, fields, bool(voices))
        hints = {k: form_int(fields, k) for k in ("num_speakers", "min_speakers", "max_speakers")}
        check_speaker_hints(hints["num_speakers"], hints["min_speakers"], hints["max_speakers"])
        language = form.language
        if cache is not None:
            cache.key(model)   # 404 for an unknown model before the job is accepted
            async with cache.use(model) as asr:
                language = check_language(language, model_languages(asr), f"'{public_name(model or settings.model)}'")
        known = await run_in_threadpool(known_voices, voices, caller) if voices else []
        return {"model": model, "model_name": public_name(model or settings.model), "language": language,
                "align": form_bool(fields, "align", True), "diarize": diarize, **hints,
                "voices": known, "speaker_threshold": voices.threshold,
                "prompt": form.prompt, "temperature": form.temperature, "response_format": form.response_format,
                "timestamp_granularities": form.timestamp_granularities}

    def run(audio_path: str, params: dict, ctx: RunContext) -> dict:
        audio = decode_to_memmap(audio_path, settings.tmp_dir, settings.job_max_audio_seconds)
        try:
            ctx.set_total(len(audio.array) / 16000)
            return engine.run(audio.array, model=params.get("model"), language=params.get("language"),
                              align=params.get("align", True), diarize=params.get("diarize", False),
                              num_speakers=params.get("num_speakers"), min_speakers=params.get("min_speakers"),
                              max_speakers=params.get("max_speakers"), prompt=params.get("prompt"),
                              temperature=params.get("temperature") or 0.0,
                              voices=[Voice.from_param(v) for v in params.get("voices") or []],
                              speaker_threshold=params.get("speaker_threshold"), job=ctx)
        finally:
            audio.close()

    def render(result: dict, fmt: str, params: dict):
        if fmt == "json":
            return transcribe_response(result, "json")
        form = TranscriptionForm(response_format=fmt,
                                 timestamp_granularities=params.get("timestamp_granularities") or ["segment"])
        return openai_response(result, form)

    def warm() -> None:
        from .punkt_data import ensure_punkt_tab
        ensure_punkt_tab()
        engine.load_asr(None)

    openapi = TranscriptionForm.openapi_body(extra_properties=EXTRA_DOC, formats=FORMATS, stream=False)
    return JobSpec(service="whisperx", formats=FORMATS, prepare=prepare, run=run, render=render, warm=warm,
                   openapi=openapi)


def worker_spec(settings: Optional[Settings] = None) -> tuple[JobSpec, Settings]:
    settings = settings or Settings()
    return job_spec(settings, WhisperXEngine(engine_config(settings))), settings
