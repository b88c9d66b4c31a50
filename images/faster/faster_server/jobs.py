"""faster-whisper's plug-in for the asynchronous jobs of stt_common.jobs: validate in the API, transcribe in
the worker window by window (progress after every segment, cancel between segments), render like the
synchronous endpoint."""
from __future__ import annotations

import threading
from typing import Optional


from stt_common import (Transcript, TranscriptionForm, check_language, join_text, model_languages, public_name,
                        render_transcript, transcript_from_dict, transcript_to_dict)
from stt_common.jobs import JobSpec, RunContext
from stt_common.uploads import audio_duration, iter_audio_chunks

from .engine import LANGUAGE_NAMES, Info, ModelNames, Options, load_model, transcribe_chunks
from .settings import FasterSettings

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class WorkerModels:
    """The worker's models: the default loaded at start and kept; others loaded on demand, at most
    `max_loaded_models` at once (the least recently used other one goes first)."""

    def __init__(self, settings: FasterSettings, names: ModelNames):
        self.settings, self.names = settings, names
        self._models: dict = {}
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            if key in self._models:
                self._models[key] = self._models.pop(key)  # most recently used last
                return self._models[key]
            while len(self._models) >= self.settings.max_loaded_models:
                victim = next((k for k in self._models if k != self.names.default_key), None)
                if victim is None:
                    break
                del self._models[victim]
            model = self._models[key] = load_model(key, self.settings)
            return model


def job_spec(settings: FasterSettings, names: Optional[ModelNames] = None, cache=None) -> JobSpec[RunContext]:
    """`cache` (the API's ModelCache) is needed to validate languages in the API; the worker passes none."""
    names = names or ModelNames(settings)
    models = WorkerModels(settings, names)

    async def prepare(fields, caller: str) -> dict:
        form = TranscriptionForm.parse(fields, allowed_formats=FORMATS, allow_stream=False)
        task = (fields.get("task") or ["transcribe"])[-1].strip() or "transcribe"
        if task not in ("transcribe", "translate"):
            from stt_common import bad_request
            raise bad_request("task must be 'transcribe' or 'translate'.", param="task", code="invalid_value")
        key = names.resolve(form.model)   # 404 for an unknown model, before the job is accepted
        language = form.language
        if cache is not None:
            model = await cache.get(key)
            language = check_language(form.language, model_languages(model),
                                      f"'{public_name(form.model or names.default_id)}'")
        return {"task": task, "model_key": key, "model_name": public_name(form.model or names.default_id),
                "language": language, "prompt": form.prompt, "temperature": form.temperature,
                "response_format": form.response_format, "timestamp_granularities": form.timestamp_granularities}

    def run(audio_path: str, params: dict, ctx: RunContext) -> dict:
        model = models.get(params["model_key"])
        total = audio_duration(audio_path)
        if total:
            ctx.set_total(total)
        opts = Options(task=params["task"], language=params.get("language"), prompt=params.get("prompt"),
                       temperature=params.get("temperature") or 0.0,
                       word_timestamps="word" in (params.get("timestamp_granularities") or []))
        info = Info()
        chunks = iter_audio_chunks(audio_path, settings.chunk_seconds, settings.job_max_audio_seconds)
        segments = []
        try:
            for seg in transcribe_chunks(model, chunks, opts, settings, info, ctx):
                segments.append(seg)
                ctx.progress(seg.end)
        finally:
            chunks.close()
        transcript = Transcript(text=join_text(segments), segments=segments, task=params["task"],
                                language=LANGUAGE_NAMES.get(info.language, info.language), duration=info.duration)
        return transcript_to_dict(transcript)

    def render(result: dict, fmt: str, params: dict):
        granularities = params.get("timestamp_granularities") or ["segment"]
        return render_transcript(transcript_from_dict(result), fmt, "word" in granularities,
                                 "segment" in granularities)

    def warm() -> None:
        models.get(names.default_key)

    openapi = TranscriptionForm.openapi_body(formats=FORMATS, stream=False, extra_properties={
        "task": {"type": "string", "enum": ["transcribe", "translate"], "default": "transcribe"}})
    return JobSpec(service="faster", formats=FORMATS, prepare=prepare, run=run, render=render, warm=warm,
                   openapi=openapi)


