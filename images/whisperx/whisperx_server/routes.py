"""The WhisperX service's transcription routes: the runbook's ``POST /transcribe`` and OpenAI's
``POST /v1/audio/transcriptions``. They live on `router` (mounted by app.build_app on the service's authenticated
router); what they share with the rest of the app (settings, engine, model cache, executor, enrolled voices,
metrics) comes from `Depends(transcriber)`."""
from __future__ import annotations

from functools import partial
from typing import Callable

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from stt_common import (BulkField, InferenceExecutor, Metrics, ModelCache, StopHandle, TranscriptionForm,
                        check_language, model_languages, public_name, receive_audio, upload_limits)
from stt_common.jobs import owner_of

from .audio import decode_to_memmap
from .engine import WhisperXEngine, check_speaker_hints
from .forms import (EXTRA_DOC, OPENAI_FORMATS, TRANSCRIBE_FORMATS, form_bool, form_int, openai_model_and_diarize,
                    transcribe_openapi, wants_diarization)
from .responses import openai_response, transcribe_response
from .settings import Settings
from .voice_fields import VoiceRequest, parse_voice_fields
from .voice_store import VoiceStore

router = APIRouter()


class Transcriber:
    """What the routes below share, made once by build_app and kept in `app.state.transcriber`."""

    def __init__(self, settings: Settings, engine: WhisperXEngine, cache: ModelCache, executor: InferenceExecutor,
                 store: VoiceStore, metrics: Metrics, device_check: Callable[..., None], bulk: list[BulkField]):
        self.settings, self.engine, self.cache, self.executor = settings, engine, cache, executor
        self.store, self.metrics, self.device_check, self.bulk = store, metrics, device_check, bulk

    async def run(self, upload, job, *, model, language, align, diarize, num_speakers, min_speakers, max_speakers,
                  prompt=None, temperature=0.0, voices: VoiceRequest | None = None, caller: str = "anonymous"):
        settings, engine, cache = self.settings, self.engine, self.cache
        voices = voices if voices is not None else VoiceRequest()
        # validate cheap things before decoding minutes of audio
        self.device_check()
        check_speaker_hints(num_speakers, min_speakers, max_speakers)
        cache.key(model)  # 404 on an unknown model before anything heavy
        enrolled = []
        if diarize:        # a missing/invalid HF token answers before the upload is decoded or ASR runs
            await run_in_threadpool(engine.check_diarization)
            if voices.enrolled:   # an unknown name too
                enrolled = await run_in_threadpool(self.store.voices, caller, voices.enrolled,
                                                   engine.voice_embedder().id)
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
                result = await self.executor.run(work, job=job)
                self.metrics.audio_seconds.labels("transcribe").inc(result.get("duration") or 0.0)
                return result
            finally:
                await run_in_threadpool(audio.close)

    def receive(self, request: Request):
        # the audio as a file part, or its URL in file_url (fetched here, under the same limits)
        return receive_audio(request, self.settings, gate=self.executor.receiving, bulk=self.bulk,
                             **upload_limits(self.settings))

    @staticmethod
    async def voice_fields(fields) -> VoiceRequest:
        return await run_in_threadpool(parse_voice_fields, fields)   # decodes the reference clips


def transcriber(request: Request) -> Transcriber:
    return request.app.state.transcriber


@router.post("/transcribe", tags=["whisperx"], summary="Transcribe with alignment and speaker labels",
             openapi_extra=transcribe_openapi())
async def transcribe(request: Request, t: Transcriber = Depends(transcriber)):
    job = StopHandle(request, t.settings.request_timeout)
    async with t.executor.admit(), t.receive(request) as up:   # a place in line before the body is read
        form = TranscriptionForm.parse(up.fields, allowed_formats=TRANSCRIBE_FORMATS, allow_stream=False)
        f = up.fields
        voices = await t.voice_fields(f)
        result = await t.run(up, job, model=form.model, language=form.language, align=form_bool(f, "align", True),
                             diarize=wants_diarization(f, bool(voices), False),
                             num_speakers=form_int(f, "num_speakers"),
                             min_speakers=form_int(f, "min_speakers"), max_speakers=form_int(f, "max_speakers"),
                             prompt=form.prompt, temperature=form.temperature, voices=voices,
                             caller=owner_of(request))
    return transcribe_response(result, form.response_format)


@router.post("/v1/audio/transcriptions", tags=["openai"], summary="OpenAI-compatible transcription",
             openapi_extra=TranscriptionForm.openapi_body(extra_properties=EXTRA_DOC, formats=OPENAI_FORMATS,
                                                          stream=False))
async def openai_transcriptions(request: Request, t: Transcriber = Depends(transcriber)):
    job = StopHandle(request, t.settings.request_timeout)
    async with t.executor.admit(), t.receive(request) as up:
        form = TranscriptionForm.parse(up.fields, allowed_formats=OPENAI_FORMATS, allow_stream=False)
        f = up.fields
        voices = await t.voice_fields(f)
        model, diarize = openai_model_and_diarize(form, f, bool(voices))
        align = form_bool(f, "align", True)
        result = await t.run(up, job, model=model, language=form.language, align=align, diarize=diarize,
                             num_speakers=form_int(f, "num_speakers"), min_speakers=form_int(f, "min_speakers"),
                             max_speakers=form_int(f, "max_speakers"), prompt=form.prompt,
                             temperature=form.temperature, voices=voices, caller=owner_of(request))
    return openai_response(result, form)
