"""Batched ASR pieces beyond whisperx's own ``transcribe``: ASR on given spans (speaker turns) and language
detection where someone speaks."""
from __future__ import annotations

import numpy as np

from .windows import SAMPLE_RATE


def asr_on_spans(pipe, audio: np.ndarray, spans: list, batch_size: int, language: str, stop=None) -> list[dict]:
    """whisperx's batched ASR over given spans (instead of its own VAD chunks): one segment per span."""
    from faster_whisper.tokenizer import Tokenizer
    if not spans:
        return []
    tokenizer = pipe.tokenizer
    if tokenizer is None or tokenizer.language_code != language or tokenizer.task != "transcribe":
        pipe.tokenizer = Tokenizer(pipe.model.hf_tokenizer, pipe.model.model.is_multilingual,
                                   task="transcribe", language=language)
    try:
        data = ({"inputs": np.ascontiguousarray(audio[a:b])} for a, b in spans)
        out = []
        for (a, b), res in zip(spans, pipe(data, batch_size=batch_size, num_workers=0)):
            if stop is not None:
                stop()
            text = res["text"]
            if batch_size in (0, 1, None) and isinstance(text, list):
                text = text[0]
            out.append({"text": text, "start": round(a / SAMPLE_RATE, 3), "end": round(b / SAMPLE_RATE, 3)})
        return out
    finally:
        if pipe.preset_language is None:
            pipe.tokenizer = None


def detect_language(pipe, chunk, first_speech: int = 0) -> str:
    chunk = chunk[max(0, first_speech):]  # detect where someone speaks
    return pipe.detect_language(np.ascontiguousarray(chunk[: 30 * SAMPLE_RATE]))
