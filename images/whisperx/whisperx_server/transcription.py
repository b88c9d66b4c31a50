"""Batched ASR on chunks of a window: the VAD's chunks (full context: the default) or given spans (speaker turns,
the turn-first order), through the guarded batched decoder (:mod:`.decoding`), with Whisper's own word timestamps
where no alignment model times the words; language detection where someone speaks; a pyannote VAD pass that stops
with its request."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .windows import SAMPLE_RATE

def set_language(pipe, language: str) -> None:
    """The pipeline's tokenizer for ``language`` (:func:`.decoding.decoding` restores the previous one)."""
    from faster_whisper.tokenizer import Tokenizer
    tokenizer = pipe.tokenizer
    if tokenizer is None or tokenizer.language_code != language or tokenizer.task != "transcribe":
        pipe.tokenizer = Tokenizer(pipe.model.hf_tokenizer, pipe.model.model.is_multilingual,
                                   task="transcribe", language=language)


def asr_on_spans(pipe, audio: np.ndarray, spans: list, batch_size: int, language: str, stop=None,
                 words: bool = False, timings: dict | None = None) -> list[dict]:
    """The batched decoder over ``spans`` [(start, end) samples, each at most 30 s] of ``audio``: one segment per
    span with text (empty ones left out), start and end in seconds; with ``words``, Whisper's word timestamps.
    Runs inside :func:`.decoding.decoding` (the request's options); ``stop`` is called after each batch;
    ``timings["words"]`` adds the seconds spent timing words."""
    from .decoding import decode_batch
    if not spans:
        return []
    set_language(pipe, language)
    fps = pipe.model.frames_per_second
    out = []
    for i in range(0, len(spans), max(1, batch_size or 1)):
        batch = spans[i:i + max(1, batch_size or 1)]
        feats = np.stack([pipe.features(audio[a:b]) for a, b in batch])
        secs = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in batch]
        frames = [min(feats.shape[-1], int(np.ceil(e - s) * fps)) for s, e in secs] if words else None
        for (s, e), res in zip(secs, decode_batch(pipe, feats, frames, [s for s, _ in secs], timings)):
            seg = {"text": res["text"], "start": round(s, 3), "end": round(e, 3), "avg_logprob": res["avg_logprob"]}
            if words:
                seg["words"] = res["words"]
            out.append(seg)
        if stop is not None:
            stop()
    return [s for s in out if s["text"].strip()]


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


def stoppable_vad(vad) -> bool:
    """Let whisperx's pyannote VAD (``STT_VAD=pyannote``) stop between its batches (of 32 ten-second chunks): it
    runs over the whole window (minutes on CPU) and offers no callback of its own. pyannote's
    ``Inference.slide`` calls a hook after every batch; this hands it one that calls the stop check of the job
    the calling thread runs (:func:`stopping`), so the same pass, with the same results, can end early. Done
    once per VAD; False where it is not pyannote's."""
    seg = getattr(getattr(vad, "vad_pipeline", None), "_segmentation", None)
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
