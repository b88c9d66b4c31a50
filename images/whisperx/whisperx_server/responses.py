"""A WhisperX result as an answer: the runbook's /transcribe JSON or SRT/VTT/text, or any OpenAI format (with the
alignment and diarization status in headers)."""
from __future__ import annotations

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from stt_common import (Segment, Transcript, TranscriptionForm, Word, to_diarized_json, to_json, to_srt, to_text,
                        to_verbose_json, to_vtt)


def to_transcript(result: dict) -> Transcript:
    segments = []
    for i, s in enumerate(result["segments"]):
        words = [Word(word=w["word"], start=w["start"] if w["start"] is not None else s["start"] or 0.0,
                      end=w["end"] if w["end"] is not None else s["end"] or 0.0, probability=w.get("score"),
                      speaker=w.get("speaker"))
                 for w in s.get("words") or []]
        segments.append(Segment(id=i, start=s["start"] or 0.0, end=s["end"] or 0.0, text=" " + s["text"],
                                words=words or None, speaker=s.get("speaker"),
                                speaker_similarity=s.get("speaker_similarity")))
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
