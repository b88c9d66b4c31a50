"""Enrolled voices: ``POST /v1/speakers`` (a name and one or more clips), ``GET /v1/speakers``,
``GET``/``DELETE /v1/speakers/{name}``, each caller's own (:mod:`.voice_store`); then ``speakers=name1,name2`` on any
diarizing request names them in the transcript.

A clip is embedded by the diarizing backend's model (and by the offline backend's as well where pyannote diarizes:
:meth:`.diarization.Diarization.enrollment_embedders`) and forgotten: only the vectors are kept.
"""
from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stt_common import bad_request, receive_upload, upload_limits
from stt_common.jobs import owner_of

from .voice_fields import check_name, decode_clip
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


def voice_routes(svc, engine, store, executor, settings) -> None:
    one_at_a_time = asyncio.Semaphore(1)   # embedding clips beside the inference executor: bounded CPU

    def embed(clips) -> dict:
        out = {}
        for emb in engine.enrollment_embedders():
            parts = []
            for audio in clips:
                vec, seconds = emb.clip(audio)
                if vec is None:
                    raise bad_request("A clip holds no speech: send the voice speaking alone.", param="file",
                                      code="invalid_speaker_reference")
                parts.append((vec, seconds))
            out[emb.id] = (mean_vector(parts), sum(s for _, s in parts))
        return out

    @svc.api.post("/v1/speakers", tags=["speakers"], status_code=201, openapi_extra=enroll_openapi(),
                  summary="Enroll a voice: a name and 1-4 clips of it; only its embeddings are kept")
    async def enroll(request: Request):
        store._check()   # 503 before reading the body when the store is off
        limits = {**upload_limits(settings), "max_bytes": min(settings.max_upload_bytes, CLIPS_MAX_BYTES)}
        async with receive_upload(request, **limits, max_files=MAX_CLIPS, gate=executor.receiving()) as up:
            name = check_name((up.fields.get("name") or [""])[-1], "name")
            append = (up.fields.get("append") or ["false"])[-1].strip().lower() in ("true", "1", "yes", "on")
            clips = []
            for f in up.files:
                clips.append(await run_in_threadpool(decode_clip, f.path, name, "file", CLIP_MIN_S, CLIP_MAX_S))
        await run_in_threadpool(engine.check_diarization)
        async with one_at_a_time:
            vectors = await run_in_threadpool(embed, clips)
        body, created = await run_in_threadpool(store.enroll, owner_of(request), name, vectors, len(clips), append)
        return JSONResponse(body, status_code=201 if created else 200)

    @svc.api.get("/v1/speakers", tags=["speakers"], summary="The caller's enrolled voices")
    async def list_voices(request: Request):
        return {"object": "list", "data": await run_in_threadpool(store.list, owner_of(request))}

    @svc.api.get("/v1/speakers/{name}", tags=["speakers"], summary="One enrolled voice")
    async def get_voice(request: Request, name: str):
        return await run_in_threadpool(store.get, owner_of(request), name)

    @svc.api.delete("/v1/speakers/{name}", tags=["speakers"],
                    summary="Delete an enrolled voice: its embeddings leave the store at once")
    async def delete_voice(request: Request, name: str):
        return await run_in_threadpool(store.delete, owner_of(request), name)

