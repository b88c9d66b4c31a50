"""Batched ASR pieces beyond whisperx's own ``transcribe``: ASR on given spans (speaker turns) and language
detection where someone speaks."""
from __future__ import annotations

import threading
from contextlib import contextmanager

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


# ---------------------------------------------------------------- a VAD pass that stops with its job

_running = threading.local()   # the stop check of the job this worker thread runs (None: none)


@contextmanager
def stopping(stop):
    """Within this block, this thread's whisperx VAD pass (see :func:`stoppable_vad`) calls ``stop`` between
    its batches."""
    _running.stop = stop
    try:
        yield
    finally:
        _running.stop = None


def stoppable_vad(pipe) -> bool:
    """Let whisperx's pyannote VAD stop between its batches (of 32 ten-second chunks): ``pipe.transcribe`` runs
    it over the whole window (minutes on CPU) and offers no callback of its own. pyannote's
    ``Inference.slide`` calls a hook after every batch; this hands it one that calls the stop check of the job
    the calling thread runs (:func:`stopping`), so the same pass, with the same results, can end early. Done
    once per pipeline; False where the VAD is not pyannote's (silero: not wrapped)."""
    seg = getattr(getattr(getattr(pipe, "vad_model", None), "vad_pipeline", None), "_segmentation", None)
    if seg is None or not hasattr(seg, "slide"):
        return False
    if getattr(seg, "_stt_stoppable", False):
        return True
    slide = seg.slide

    def checked_slide(waveform, sample_rate, hook=None):
        def check(*args, **kwargs):
            if hook is not None:
                hook(*args, **kwargs)
            stop = getattr(_running, "stop", None)
            if stop is not None:
                stop()
        return slide(waveform, sample_rate, hook=check)

    seg.slide = checked_slide
    seg._stt_stoppable = True
    return True
