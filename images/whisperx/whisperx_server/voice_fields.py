"""The known-speaker fields of a diarizing request, as OpenAI names them, and the voice names they carry.

- ``known_speaker_names[]`` with ``known_speaker_references[]``: up to 4 names, each with one clip of 2 to 10 s
  sent as a data URL (``data:audio/wav;base64,...``), in the same order (OpenAI's gpt-4o-transcribe-diarize);
- ``speakers``: names of voices the caller enrolled (``POST /v1/speakers``), comma-separated or repeated;
- ``speaker_threshold``: this request's decision threshold (0-1) instead of the server's.

References are parts of their own bound (:data:`REFERENCES`, :class:`stt_common.BulkField`): four clips of ten
seconds as data URLs do not fit the 64 KiB that all other non-file fields share, and that budget stays as it is.
Each clip is decoded here (PyAV, at most :data:`REFERENCE_MAX_S` decoded: a compressed clip that would decode to
hours stops there) and checked; embedding it is the engine's work (:meth:`.engine.WhisperXEngine.embed_references`).
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from stt_common import APIError, BulkField, bad_request, decode_audio_sync

NAMES = ("known_speaker_names[]", "known_speaker_names")
REFS = ("known_speaker_references[]", "known_speaker_references")
MAX_REFERENCES = 4                 # OpenAI's limit
REFERENCE_MIN_S, REFERENCE_MAX_S = 2.0, 10.0
_DURATION_SLACK_S = 0.25           # encoders pad a few frames (mp3's 50 ms): a "10 s" clip may decode to 10.05 s
MAX_SPEAKER_NAMES = 20             # speakers= per request
MAX_NAME_CHARS = 64
# a data URL of a 10 s clip: 16-bit 48 kHz stereo WAV is 1.9 MB, 2.6 MB in base64; compressed formats far less
DEFAULT_REFERENCE_BYTES = 4 * 1024 * 1024
# media types a reference may declare: audio of any kind, the video containers audio comes in, or none in particular
_MEDIA = re.compile(r"^(audio/[\w.+-]+|video/(mp4|webm|ogg|quicktime|x-matroska)|application/octet-stream)$")


def references_field(max_part_bytes: int = DEFAULT_REFERENCE_BYTES) -> BulkField:
    """The references' own bound in the multipart receiver."""
    return BulkField(names=REFS, max_parts=MAX_REFERENCES, max_part_bytes=max_part_bytes)


@dataclass
class VoiceRequest:
    """What a request asked for: reference clips to embed [(name, 16 kHz audio)], enrolled voices by name, and a
    threshold (None: the server's)."""
    clips: list[tuple[str, np.ndarray]] = field(default_factory=list)
    enrolled: list[str] = field(default_factory=list)
    threshold: float | None = None

    def __bool__(self) -> bool:
        return bool(self.clips or self.enrolled)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.clips] + self.enrolled


def check_name(name: str, param: str) -> str:
    """A speaker's name as it will label segments: 1-64 characters, letters of any script, digits, spaces and
    ``. _ ' -``; not ``SPEAKER_...`` (the anonymous labels)."""
    name = unicodedata.normalize("NFC", (name or "").strip())
    if not name:
        raise bad_request("A speaker name is empty.", param=param, code="invalid_speaker_name")
    if len(name) > MAX_NAME_CHARS:
        raise bad_request(f"Speaker name too long: at most {MAX_NAME_CHARS} characters.", param=param,
                          code="invalid_speaker_name")
    if not all(c.isalnum() or c in " ._'-" for c in name):
        raise bad_request(f"Invalid speaker name {name!r}: use letters, digits, spaces and . _ ' -.", param=param,
                          code="invalid_speaker_name")
    if name.upper().startswith("SPEAKER_"):
        raise bad_request(f"Invalid speaker name {name!r}: SPEAKER_... labels speakers nobody named.", param=param,
                          code="invalid_speaker_name")
    return name


def _values(fields, names) -> list[str]:
    out: list[str] = []
    for n in names:
        out.extend(fields.get(n) or [])
    return out


def parse_threshold(fields) -> float | None:
    v = (fields.get("speaker_threshold") or [""])[-1].strip()
    if not v:
        return None
    try:
        t = float(v)
    except ValueError:
        t = -1.0
    if not 0.0 <= t <= 1.0:
        raise bad_request("Invalid value for 'speaker_threshold': expected a number between 0 and 1.",
                          param="speaker_threshold", code="invalid_value")
    return t


def parse_voice_fields(fields) -> VoiceRequest:
    """The request's known speakers, references decoded and checked (400s name the field)."""
    names = [check_name(n, NAMES[0]) for n in _values(fields, NAMES)]
    refs = _values(fields, REFS)
    if len(names) > MAX_REFERENCES:
        raise bad_request(f"At most {MAX_REFERENCES} known_speaker_names per request.", param=NAMES[0],
                          code="too_many_speakers")
    if len(names) != len(refs):
        raise bad_request(f"known_speaker_names[] and known_speaker_references[] must come in pairs: {len(names)} "
                          f"name(s), {len(refs)} reference(s).", param=REFS[0], code="invalid_speaker_reference")
    enrolled: list[str] = []
    for v in _values(fields, ("speakers", "speakers[]")):
        enrolled.extend(check_name(p, "speakers") for p in v.split(",") if p.strip())
    if len(enrolled) > MAX_SPEAKER_NAMES:
        raise bad_request(f"At most {MAX_SPEAKER_NAMES} enrolled speakers per request.", param="speakers",
                          code="too_many_speakers")
    seen: set = set()
    for n in names + enrolled:
        if n.casefold() in seen:
            raise bad_request(f"Speaker {n!r} is named twice.", param="speakers" if n in enrolled else NAMES[0],
                              code="invalid_speaker_name")
        seen.add(n.casefold())
    clips = [(n, decode_reference(r, n)) for n, r in zip(names, refs)]
    return VoiceRequest(clips=clips, enrolled=enrolled, threshold=parse_threshold(fields))


def decode_reference(url: str, name: str, param: str = REFS[0], min_s: float = REFERENCE_MIN_S,
                     max_s: float = REFERENCE_MAX_S) -> np.ndarray:
    """A data URL's audio as 16 kHz mono float32, between ``min_s`` and ``max_s`` seconds long."""
    url = url.strip()
    m = re.match(r"^data:([^;,]*)((?:;[^;,]*)*),", url[:512], flags=re.IGNORECASE)
    if not m:
        raise bad_request(f"The reference for {name!r} is not a data URL: send data:audio/...;base64,<the clip>.",
                          param=param, code="invalid_speaker_reference")
    media = m.group(1).strip().lower()
    if media and not _MEDIA.match(media):
        raise bad_request(f"The reference for {name!r} declares {media!r}: send an audio clip (audio/...).",
                          param=param, code="invalid_speaker_reference")
    if ";base64" not in m.group(2).lower():
        raise bad_request(f"The reference for {name!r} must be base64-encoded (data:audio/...;base64,...).",
                          param=param, code="invalid_speaker_reference")
    try:
        raw = base64.b64decode(url[m.end():], validate=False)
    except (binascii.Error, ValueError):
        raise bad_request(f"The reference for {name!r} is not valid base64.", param=param,
                          code="invalid_speaker_reference") from None
    return decode_clip(raw, name, param, min_s, max_s)


def decode_clip(raw, name: str, param: str, min_s: float, max_s: float) -> np.ndarray:
    """A clip's bytes (or a file path) as 16 kHz mono float32, between ``min_s`` and ``max_s`` seconds long."""
    src = io.BytesIO(raw) if isinstance(raw, (bytes, bytearray)) else raw
    try:
        audio = decode_audio_sync(src, max_seconds=max_s + _DURATION_SLACK_S)
    except APIError as e:
        if e.code == "audio_too_long":
            raise bad_request(f"The clip for {name!r} is longer than {max_s:g} s.", param=param,
                              code="invalid_speaker_reference") from None
        raise bad_request(f"The clip for {name!r} is not audio that can be decoded "
                          f"({e.message.rstrip('.')}).", param=param, code="invalid_speaker_reference") from None
    seconds = len(audio) / 16000
    if seconds < min_s:
        raise bad_request(f"The clip for {name!r} lasts {seconds:.1f} s: it must last {min_s:g} to {max_s:g} s.",
                          param=param, code="invalid_speaker_reference")
    return audio
