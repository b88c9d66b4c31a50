"""Enrolled voices: ``POST /v1/speakers`` (a name and one or more clips), ``GET /v1/speakers``,
``GET``/``DELETE /v1/speakers/{name}``, each caller's own (:mod:`.voice_store`); then ``speakers=name1,name2`` on any
diarizing request names them in the transcript. The routes live on `router` (mounted by app.build_app on the
service's authenticated router); what they share comes from `Depends(enrolled_voices)`.

A clip is embedded by the diarizing backend's model (and by the offline backend's as well where pyannote diarizes:
:meth:`.diarization.Diarization.enrollment_embedders`) and forgotten: only the vectors are kept.
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stt_common import InferenceExecutor, bad_request, receive_upload, upload_limits
from stt_common.jobs import owner_of

from .engine import WhisperXEngine
from .settings import Settings
from .voice_fields import check_name, decode_clip
from .voice_store import VoiceStore
from .voices import mean_vector

MAX_CLIPS = 4                       # per enrollment request (send append=true to add more)
CLIP_MIN_S, CLIP_MAX_S = 2.0, 30.0
CLIPS_MAX_BYTES = 64 * 1024 * 1024  # the clips of one request together


def enroll_openapi() -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["name", "file"], "properties": {
            "name": {"type": "string", "maxLength": 64,
                     "description": "The name segments will carry (letters, digits, spaces, . _ ' -)."},
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": MAX_CLIPS,
                     "description": f"1 to {MAX_CLIPS} clips of this voice alone, {CLIP_MIN_S:g} to {CLIP_MAX_S:g} s "
                                    f"each, any format FFmpeg decodes (several 'file' parts)."},
            "append": {"type": "boolean", "default": False,
                       "description": "Add these clips to an enrolled voice of this name instead of a 409."},
        }}}}}}


class EnrolledVoices:
    """What the /v1/speakers routes share, made once by build_app and kept in `app.state.enrolled_voices`: the engine
    (its enrollment embedders), the voice store, the executor (whose upload gate the clips pass), the settings, and
    one embedding at a time beside the inference executor (bounded CPU)."""

    def __init__(self, engine: WhisperXEngine, store: VoiceStore, executor: InferenceExecutor, settings: Settings):
        self.engine, self.store, self.executor, self.settings = engine, store, executor, settings
        self.one_at_a_time = asyncio.Semaphore(1)

    def embed(self, clips) -> dict:
        out = {}
        for emb in self.engine.enrollment_embedders():
            parts = []
            for audio in clips:
                vec, seconds = emb.clip(audio)
                if vec is None:
                    raise bad_request("A clip holds no speech: send the voice speaking alone.", param="file",
                                      code="invalid_speaker_reference")
                parts.append((vec, seconds))
            out[emb.id] = (mean_vector(parts), sum(s for _, s in parts))
        return out


def enrolled_voices(request: Request) -> EnrolledVoices:
    return request.app.state.enrolled_voices


router = APIRouter()   # mounted by build_app on the service's authenticated router


@router.post("/v1/speakers", tags=["speakers"], status_code=201, openapi_extra=enroll_openapi(),
             summary="Enroll a voice: a name and 1-4 clips of it; only its embeddings are kept")
async def enroll(request: Request, v: EnrolledVoices = Depends(enrolled_voices)):
    v.store._check()   # 503 before reading the body when the store is off
    limits = {**upload_limits(v.settings), "max_bytes": min(v.settings.max_upload_bytes, CLIPS_MAX_BYTES)}
    async with receive_upload(request, **limits, max_files=MAX_CLIPS, gate=v.executor.receiving()) as up:
        name = check_name((up.fields.get("name") or [""])[-1], "name")
        append = (up.fields.get("append") or ["false"])[-1].strip().lower() in ("true", "1", "yes", "on")
        clips = []
        for f in up.files:
            clips.append(await run_in_threadpool(decode_clip, f.path, name, "file", CLIP_MIN_S, CLIP_MAX_S))
    await run_in_threadpool(v.engine.check_diarization)
    async with v.one_at_a_time:
        vectors = await run_in_threadpool(v.embed, clips)
    body, created = await run_in_threadpool(v.store.enroll, owner_of(request), name, vectors, len(clips), append)
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/v1/speakers", tags=["speakers"], summary="The caller's enrolled voices")
async def list_voices(request: Request, v: EnrolledVoices = Depends(enrolled_voices)):
    return {"object": "list", "data": await run_in_threadpool(v.store.list, owner_of(request))}


@router.get("/v1/speakers/{name}", tags=["speakers"], summary="One enrolled voice")
async def get_voice(request: Request, name: str, v: EnrolledVoices = Depends(enrolled_voices)):
    return await run_in_threadpool(v.store.get, owner_of(request), name)


@router.delete("/v1/speakers/{name}", tags=["speakers"],
               summary="Delete an enrolled voice: its embeddings leave the store at once")
async def delete_voice(request: Request, name: str, v: EnrolledVoices = Depends(enrolled_voices)):
    return await run_in_threadpool(v.store.delete, owner_of(request), name)
