"""Batched ASR on chunks of a window: the VAD's chunks (whisperx's own, full context: the default) or given spans
(speaker turns, the turn-first order), through the guarded batched decoder (:mod:`.decoding`), with Whisper's own
word timestamps where no alignment model times the words; and language detection where someone speaks."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .windows import SAMPLE_RATE

CHUNK_S = 30   # whisper reads 30 s at a time: VAD chunks are merged up to this length


def vad_chunks(pipe, audio: np.ndarray, stop=None, chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
    """(start, end) samples of the chunks whisperx's ``transcribe`` would decode: its VAD over ``audio``, speech
    merged into chunks of up to ``chunk_s`` seconds (the same calls, so the same chunks as the library)."""
    from whisperx.vads import Pyannote, Vad
    vad = pipe.vad_model
    kind = type(vad) if issubclass(type(vad), Vad) else Pyannote
    with stopping(stop):   # the VAD pass checks between its batches (stoppable_vad)
        found = vad({"waveform": kind.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
    merged = kind.merge_chunks(found, chunk_s, onset=pipe._vad_params["vad_onset"],
                               offset=pipe._vad_params["vad_offset"])
    return [(int(c["start"] * SAMPLE_RATE), int(c["end"] * SAMPLE_RATE)) for c in merged]


def silero_vad():
    """whisperx's VAD interface (``whisperx.vads.Vad``: called on {"waveform", "sample_rate"}, speech segments
    merged into chunks) over silero-vad's shipped ONNX model (``diarize_offline.SpeechDetector``): the chunks
    whisperx's own silero option would make (its threshold 0.5, speech cut at 30 s), without the download its
    option needs, and about ten times faster on CPU than the default pyannote segmentation model."""
    from diarize_offline.vad import SpeechDetector
    from whisperx.diarize import Segment
    from whisperx.vads.vad import Vad

    class SileroChunks(Vad):
        def __init__(self):
            super().__init__(0.5)
            self.detector = SpeechDetector(threshold=0.5)

        def __call__(self, audio, **_kw):
            regions = self.detector.regions(np.asarray(audio["waveform"]), max_speech_s=CHUNK_S)
            return [Segment(a / SAMPLE_RATE, b / SAMPLE_RATE, "UNKNOWN") for a, b in regions]

        @staticmethod
        def preprocess_audio(audio):
            return audio

        @staticmethod
        def merge_chunks(segments, chunk_size, onset: float = 0.5, offset=None):
            return Vad.merge_chunks(segments, chunk_size, onset, offset) if segments else []

    return SileroChunks()


def set_language(pipe, language: str) -> None:
    """The pipeline's tokenizer for ``language`` (whisperx keeps one; :func:`.decoding.decoding` restores it)."""
    from faster_whisper.tokenizer import Tokenizer
    tokenizer = pipe.tokenizer
    if tokenizer is None or tokenizer.language_code != language or tokenizer.task != "transcribe":
        pipe.tokenizer = Tokenizer(pipe.model.hf_tokenizer, pipe.model.model.is_multilingual,
                                   task="transcribe", language=language)


def asr_on_spans(pipe, audio: np.ndarray, spans: list, batch_size: int, language: str, stop=None,
                 words: bool = False) -> list[dict]:
    """The batched decoder over ``spans`` [(start, end) samples, each at most 30 s] of ``audio``: one segment per
    span with text (empty ones left out), start and end in seconds; with ``words``, Whisper's word timestamps.
    Runs inside :func:`.decoding.decoding` (the request's options); ``stop`` is called after each batch."""
    from whisperx.audio import N_SAMPLES, log_mel_spectrogram

    from .decoding import decode_batch
    if not spans:
        return []
    set_language(pipe, language)
    n_mels = pipe.model.feat_kwargs.get("feature_size") or 80
    fps = pipe.model.frames_per_second
    out = []
    for i in range(0, len(spans), max(1, batch_size or 1)):
        batch = spans[i:i + max(1, batch_size or 1)]
        feats = np.stack([log_mel_spectrogram(np.ascontiguousarray(audio[a:b]), n_mels=n_mels,
                                              padding=N_SAMPLES - (b - a)).numpy() for a, b in batch])
        secs = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in batch]
        frames = [min(feats.shape[-1], int(np.ceil(e - s) * fps)) for s, e in secs] if words else None
        for (s, e), res in zip(secs, decode_batch(pipe, feats, frames, [s for s, _ in secs])):
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
