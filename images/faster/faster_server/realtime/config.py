"""A transcription session's configuration, as `session.update` sets it and `session.updated` shows it.

Two shapes of the same thing are understood: the Realtime API's (GA) `session.update` with
`{"type": "transcription", "audio": {"input": {...}}}`, which the current openai SDK sends, and the beta
`transcription_session.update` (`input_audio_format`, `input_audio_transcription`, ...), which older clients send.
Only the fields present change; `turn_detection: null` turns server VAD off (the client commits itself)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from stt_common import has_control

from .events import ProtocolError

MAX_PROMPT_CHARS = 4000
MAX_KEYWORDS = 100
# what OpenAI documents for a transcription session that this server accepts and has no use for
IGNORED = {"delay", "languages"}
TURN_IGNORED = {"create_response", "interrupt_response", "idle_timeout_ms", "eagerness"}
# G.711 at 8 kHz (telephony), or 16-bit little-endian PCM at a rate (OpenAI's: 24000 only; any listed here works)
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI's `server_vad`: speech above `threshold` (0-1, silero's probability) starts a turn, which keeps
    `prefix_padding_ms` of audio before it and ends after `silence_duration_ms` of silence."""
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def to_dict(self) -> dict:
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms}


@dataclass(frozen=True)
class SessionConfig:
    model: Optional[str] = None          # the name the client chose (None: the server's default)
    language: Optional[str] = None
    prompt: str = ""
    keywords: tuple = ()
    format: str = "audio/pcm"            # audio/pcm, audio/pcmu, audio/pcma
    rate: int = 24000
    turn_detection: Optional[TurnDetection] = field(default_factory=TurnDetection)

    @property
    def input_rate(self) -> int:
        return self.rate if self.format == "audio/pcm" else 8000

    def to_ga(self, session_id: str, model_name: str, expires_at: int) -> dict:
        fmt = {"type": self.format, "rate": self.rate} if self.format == "audio/pcm" else {"type": self.format}
        transcription: dict[str, Any] = {"model": model_name, "language": self.language, "prompt": self.prompt}
        if self.keywords:
            transcription["keywords"] = list(self.keywords)
        return {"type": "transcription", "object": "realtime.transcription_session", "id": session_id,
                "expires_at": expires_at, "include": [],
                "audio": {"input": {"format": fmt, "transcription": transcription, "noise_reduction": None,
                                    "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None}}}

    def to_beta(self, session_id: str, model_name: str, expires_at: int) -> dict:
        fmt = {v: k for k, v in BETA_FORMATS.items()}[self.format]
        return {"id": session_id, "object": "realtime.transcription_session", "expires_at": expires_at,
                "input_audio_format": fmt, "include": [], "input_audio_noise_reduction": None,
                "input_audio_transcription": {"model": model_name, "language": self.language, "prompt": self.prompt},
                "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None}


def _obj(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"Invalid type for '{param}': expected an object.", code="invalid_type", param=param)
    return value


def _known(obj: dict, allowed: set, param: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ProtocolError(f"Unknown parameter: '{param}.{key}'.", code="unknown_parameter",
                                param=f"{param}.{key}")


def _text(value: Any, param: str, limit: int = 200, nullable: bool = True, multiline: bool = False) -> Optional[str]:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > limit or has_control(value, multiline):
        raise ProtocolError(f"Invalid value for '{param}': a string of at most {limit} characters, no control "
                            f"characters.", code="invalid_value", param=param)
    return value


def _number(value: Any, param: str, lo: float, hi: float, integer: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
    if ok and integer and value != int(value):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ProtocolError(f"Invalid value for '{param}': {kind} from {lo:g} to {hi:g}.", code="invalid_value",
                            param=param)
    return int(value) if integer else float(value)


def _turn_detection(value: Any, current: Optional[TurnDetection], param: str) -> Optional[TurnDetection]:
    if value is None:
        return None
    value = _obj(value, param)
    _known(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"} | TURN_IGNORED, param)
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise ProtocolError(f"Unsupported turn detection type '{kind}': use 'server_vad', or null to commit the "
                            f"buffer yourself.", code="unsupported_turn_detection", param=f"{param}.type")
    td = current or TurnDetection()
    if "threshold" in value:
        td = dataclasses.replace(td, threshold=_number(value["threshold"], f"{param}.threshold", 0.0, 1.0))
    if "prefix_padding_ms" in value:
        td = dataclasses.replace(td, prefix_padding_ms=_number(value["prefix_padding_ms"],
                                                               f"{param}.prefix_padding_ms", 0, 5000, True))
    if "silence_duration_ms" in value:
        td = dataclasses.replace(td, silence_duration_ms=_number(value["silence_duration_ms"],
                                                                 f"{param}.silence_duration_ms", 100, 10000, True))
    return td


def _transcription(cfg: SessionConfig, value: Any, param: str) -> SessionConfig:
    if value is None:   # "transcription: null" turns transcription off at OpenAI; here it is what the session does
        raise ProtocolError(f"'{param}' cannot be null: this server's sessions transcribe.", code="invalid_value",
                            param=param)
    value = _obj(value, param)
    _known(value, {"model", "language", "prompt", "keywords"} | IGNORED, param)
    changes: dict[str, Any] = {}
    if "model" in value:
        changes["model"] = _text(value["model"], f"{param}.model") or None
    if "language" in value:
        changes["language"] = (_text(value["language"], f"{param}.language", 16) or "").strip().lower() or None
    if "prompt" in value:
        changes["prompt"] = _text(value["prompt"], f"{param}.prompt", MAX_PROMPT_CHARS, multiline=True) or ""
    if "keywords" in value:
        words = value["keywords"]
        if words is None:
            words = []
        if not isinstance(words, list) or len(words) > MAX_KEYWORDS:
            raise ProtocolError(f"Invalid value for '{param}.keywords': a list of at most {MAX_KEYWORDS} strings.",
                                code="invalid_value", param=f"{param}.keywords")
        changes["keywords"] = tuple(_text(w, f"{param}.keywords", 100, nullable=False) for w in words)
    return dataclasses.replace(cfg, **changes)


def _ga_format(value: Any, param: str) -> dict:
    value = _obj(value, param)
    _known(value, {"type", "rate"}, param)
    kind = value.get("type", "audio/pcm")
    if kind not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        raise ProtocolError(f"Unsupported audio format '{kind}': audio/pcm (16-bit little-endian, mono), audio/pcmu "
                            f"or audio/pcma.", code="invalid_value", param=f"{param}.type")
    out = {"format": kind}
    if kind == "audio/pcm" and "rate" in value:
        if value["rate"] not in PCM_RATES:
            raise ProtocolError(f"Unsupported sample rate {value['rate']!r}: one of "
                                + ", ".join(map(str, PCM_RATES)) + " (OpenAI's: 24000).", code="invalid_value",
                                param=f"{param}.rate")
        out["rate"] = int(value["rate"])
    elif kind == "audio/pcm":
        out["rate"] = 24000
    return out


def apply_ga(cfg: SessionConfig, session: Any) -> SessionConfig:
    """`session.update`'s `session` (GA shape) applied to `cfg`; ProtocolError naming the parameter."""
    session = _obj(session, "session")
    _known(session, {"type", "audio", "include", "object", "id", "expires_at", "model"}, "session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise ProtocolError(f"This server runs transcription sessions only, not '{kind}': send "
                            f"{{\"type\": \"transcription\", ...}} (connect with ?intent=transcription).",
                            code="unsupported_session_type", param="session.type")
    _include(session.get("include"))
    audio = _obj(session.get("audio", {}), "session.audio")
    _known(audio, {"input", "output"}, "session.audio")
    inp = _obj(audio.get("input", {}), "session.audio.input")
    _known(inp, {"format", "transcription", "turn_detection", "noise_reduction"}, "session.audio.input")
    if "format" in inp:
        cfg = dataclasses.replace(cfg, **_ga_format(inp["format"], "session.audio.input.format"))
    return _transcription_and_turns(cfg, inp, "transcription", "session.audio.input")


def apply_beta(cfg: SessionConfig, session: Any) -> SessionConfig:
    """`transcription_session.update`'s `session` (the beta shape) applied to `cfg`."""
    session = _obj(session, "session")
    _known(session, {"input_audio_format", "input_audio_transcription", "turn_detection", "include",
                     "input_audio_noise_reduction", "modalities", "client_secret"}, "session")
    _include(session.get("include"))
    if "input_audio_format" in session:
        fmt = session["input_audio_format"]
        if fmt not in BETA_FORMATS:
            raise ProtocolError(f"Unsupported input_audio_format {fmt!r}: pcm16, g711_ulaw or g711_alaw.",
                                code="invalid_value", param="session.input_audio_format")
        cfg = dataclasses.replace(cfg, format=BETA_FORMATS[fmt], rate=24000)
    return _transcription_and_turns(cfg, session, "input_audio_transcription", "session")


def _transcription_and_turns(cfg: SessionConfig, obj: dict, key: str, param: str) -> SessionConfig:
    """The transcription settings (under `key`) and the turn detection of `obj`, named `param` in errors."""
    if key in obj:
        cfg = _transcription(cfg, obj[key], f"{param}.{key}")
    if "turn_detection" in obj:
        cfg = dataclasses.replace(cfg, turn_detection=_turn_detection(
            obj["turn_detection"], cfg.turn_detection, f"{param}.turn_detection"))
    return cfg


def _include(value: Any) -> None:
    # logprobs are not given (faster-whisper does not expose token probabilities): accepted, left out
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise ProtocolError("Invalid value for 'session.include': a list of strings.", code="invalid_value",
                            param="session.include")
