"""Output writers: json, text, srt, vtt, verbose_json (OpenAI's shape) and diarized_json."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional

from fastapi.responses import JSONResponse, PlainTextResponse, Response

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: Optional[float] = None
    speaker: Optional[str] = None


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: List[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: Optional[List[Word]] = None
    speaker: Optional[str] = None
    speaker_similarity: Optional[float] = None   # with known speakers: this segment's voice against its name's


@dataclass
class Transcript:
    text: str
    segments: List[Segment]
    language: str
    duration: float
    task: str = "transcribe"
    words: Optional[List[Word]] = None

    def all_words(self) -> List[Word]:
        if self.words is not None:
            return self.words
        return [w for s in self.segments for w in (s.words or [])]


def join_text(segments: Iterable[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


def _r(x: float, n: int = 3) -> float:
    return round(float(x), n)


def segment_dict(s: Segment) -> dict:
    d = {
        "id": s.id,
        "seek": int(s.seek),
        "start": _r(s.start),
        "end": _r(s.end),
        "text": s.text,
        "tokens": [int(t) for t in s.tokens],
        "temperature": float(s.temperature),
        "avg_logprob": float(s.avg_logprob),
        "compression_ratio": float(s.compression_ratio),
        "no_speech_prob": float(s.no_speech_prob),
    }
    if s.speaker is not None:
        d["speaker"] = s.speaker
    if s.speaker_similarity is not None:
        d["speaker_similarity"] = _r(s.speaker_similarity)
    return d


def word_dict(w: Word) -> dict:
    d = {"word": w.word, "start": _r(w.start), "end": _r(w.end)}
    if w.probability is not None:
        d["probability"] = _r(w.probability, 4)
    if w.speaker is not None:
        d["speaker"] = w.speaker
    return d


def to_json(t: Transcript) -> dict:
    return {"text": t.text, "usage": {"type": "duration", "seconds": int(round(t.duration + 0.4999))}}


def to_verbose_json(t: Transcript, word_timestamps: bool = False, segment_timestamps: bool = True) -> dict:
    d = {
        "task": t.task,
        "language": t.language,
        "duration": _r(t.duration, 3),
        "text": t.text,
        "segments": [segment_dict(s) for s in t.segments] if segment_timestamps or not word_timestamps else None,
    }
    if word_timestamps:
        d["words"] = [word_dict(w) for w in t.all_words()]
    d["usage"] = {"type": "duration", "seconds": int(round(t.duration + 0.4999))}
    if d["segments"] is None:
        del d["segments"]
    return d


def to_diarized_json(t: Transcript) -> dict:
    return {
        "task": "transcribe",
        "duration": _r(t.duration, 3),
        "text": t.text,
        "segments": [
            {"type": "transcript.text.segment", "id": f"seg_{s.id}", "start": _r(s.start), "end": _r(s.end),
             "text": s.text.strip(), "speaker": s.speaker or "UNKNOWN",
             **({} if s.speaker_similarity is None else {"speaker_similarity": _r(s.speaker_similarity)})}
            for s in t.segments
        ],
        "usage": {"type": "duration", "seconds": int(round(t.duration + 0.4999))},
    }


def _line(s: Segment) -> str:
    text = s.text.strip()
    return f"[{s.speaker}] {text}" if s.speaker else text


def to_text(t: Transcript) -> str:
    if any(s.speaker for s in t.segments):
        return "\n".join(_line(s) for s in t.segments) + "\n"
    return t.text + "\n"


def _ts(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, s in enumerate(t.segments, 1):
        blocks.append(f"{i}\n{_ts(s.start, ',')} --> {_ts(s.end, ',')}\n{_line(s)}\n")
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    out = ["WEBVTT\n"]
    for s in t.segments:
        out.append(f"{_ts(s.start, '.')} --> {_ts(s.end, '.')}\n{_line(s)}\n")
    return "\n".join(out)


def render_transcript(t: Transcript, response_format: str = "json", word_timestamps: bool = False,
                      segment_timestamps: bool = True) -> Response:
    if response_format == "json":
        return JSONResponse(to_json(t))
    if response_format == "verbose_json":
        return JSONResponse(to_verbose_json(t, word_timestamps, segment_timestamps))
    if response_format == "diarized_json":
        return JSONResponse(to_diarized_json(t))
    if response_format == "text":
        return PlainTextResponse(to_text(t))
    if response_format == "srt":
        return PlainTextResponse(to_srt(t))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    raise ValueError(f"unknown response_format {response_format!r}")


def dumps(d: dict) -> str:
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def transcript_to_dict(t: Transcript) -> dict:
    """A Transcript as plain JSON (a stored job result); transcript_from_dict reads it back."""
    return asdict(t)


def transcript_from_dict(d: dict) -> Transcript:
    def words(ws):
        return None if ws is None else [Word(**w) for w in ws]

    segments = [Segment(**{**s, "words": words(s.get("words"))}) for s in d["segments"]]
    return Transcript(text=d["text"], segments=segments, language=d["language"], duration=d["duration"],
                      task=d.get("task", "transcribe"), words=words(d.get("words")))
