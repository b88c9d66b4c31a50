"""Whisper's language codes, and the check a request's `language` passes before any audio is decoded."""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import bad_request


def whisper_languages() -> tuple:
    """Every code Whisper knows (faster-whisper's tokenizer list; both images install faster-whisper)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    return tuple(_LANGUAGE_CODES)


def model_languages(model) -> tuple:
    """The languages a loaded faster-whisper `WhisperModel` (or whisperx pipeline) can transcribe."""
    for m in (model, getattr(model, "model", None)):   # whisperx's pipeline wraps the WhisperModel in .model
        langs = getattr(m, "supported_languages", None)
        if langs:
            return tuple(langs)
    for m in (getattr(model, "model", None), getattr(getattr(model, "model", None), "model", None)):
        if m is not None and hasattr(m, "is_multilingual"):
            return whisper_languages() if m.is_multilingual else ("en",)
    return whisper_languages()


def check_language(language: Optional[str], supported: Sequence[str], model_name: str = "the model") -> Optional[str]:
    """`language` lower-cased if `supported` has it, else a 400 that names the valid codes."""
    if language is None:
        return None
    code = language.strip().lower()
    if code in supported:
        return code
    if tuple(supported) == ("en",):
        msg = f"Model '{model_name}' is English-only: language must be 'en' (or omitted), not '{language}'."
    else:
        msg = (f"Unsupported language '{language}': use an ISO-639-1 code that {model_name} knows: "
               + ", ".join(supported) + ".")
    raise bad_request(msg, param="language", code="unsupported_language")
