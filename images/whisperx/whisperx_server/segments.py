"""Segments as the pipeline hands them on: moved by a window's offset, and cleaned for the client (rounded
numbers, NaN as None, speakers only when diarized)."""
from __future__ import annotations

import math
from typing import Any


def clean_float(x) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    return round(f, 3)


def offset_segment(s: dict, offset: float) -> dict:
    seg = dict(s)
    for k in ("start", "end"):
        if clean_float(seg.get(k)) is not None:
            seg[k] = float(seg[k]) + offset
    if "words" in seg:
        words = []
        for w in seg["words"]:
            w = dict(w)
            for k in ("start", "end"):
                if clean_float(w.get(k)) is not None:
                    w[k] = float(w[k]) + offset
            words.append(w)
        seg["words"] = words
    return seg


def public_segment(s: dict, diarized: bool) -> dict:
    seg: dict[str, Any] = {"start": clean_float(s.get("start")), "end": clean_float(s.get("end")),
                           "text": str(s.get("text", "")).strip()}
    if diarized:
        seg["speaker"] = s.get("speaker")
        if "speaker_similarity" in s:   # known speakers were given (whisperx_server.voices)
            seg["speaker_similarity"] = clean_float(s["speaker_similarity"])
    words = []
    for w in s.get("words") or []:
        word = {"word": str(w.get("word", "")), "start": clean_float(w.get("start")),
                "end": clean_float(w.get("end")), "score": clean_float(w.get("score"))}
        if diarized:
            word["speaker"] = w.get("speaker", seg.get("speaker"))
        words.append(word)
    seg["words"] = words
    return seg
