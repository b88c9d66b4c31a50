"""Voice embeddings in each diarization backend's own space: a reference clip's voice (one vector per clip or
enrolled voice) and a transcript segment's (for its ``speaker_similarity``).

- offline backend: the diarizer's own embedder (resemblyzer; :meth:`diarize_offline.OfflineDiarizer.voice_embedding`
  and ``span_embeddings``), windows and means made exactly as for its speaker clusters;
- pyannote backend: the pipeline's embedding model (``pipeline._embedding``: WeSpeaker's ResNet34 in
  speaker-diarization-community-1), on the clip's speech (silero VAD) in pieces of at most 10 s, the length of the
  chunks the pipeline embeds.

The identity (``id``) names backend and model: voices made by one embedder are never compared with another's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from diarize_offline import SpeechDetector

SAMPLE_RATE = 16000
PIECE_S = 10.0          # pyannote embeds 10 s chunks; longer speech is cut into pieces and averaged
MIN_SPAN_S = 0.25       # shorter segments get no embedding of their own (their cluster's similarity stands in)


class OfflineVoices:
    def __init__(self, diarizer):
        self.diarizer = diarizer
        self.id = f"offline:{diarizer.embedder.name}"

    def clip(self, audio: np.ndarray) -> tuple[np.ndarray | None, float]:
        return self.diarizer.voice_embedding(audio)

    def spans(self, audio: np.ndarray, spans: list[tuple[int, int]], stop=None) -> list[np.ndarray | None]:
        return self.diarizer.span_embeddings(audio, spans, progress=(lambda _n: stop()) if stop else None)


class PyannoteVoices:
    def __init__(self, pipeline, model_name: str, device: str = "cpu"):
        inner = getattr(pipeline, "model", pipeline)     # whisperx's DiarizationPipeline wraps pyannote's
        self.embedding = inner._embedding
        self.id = f"pyannote:{model_name}"
        self.device = device
        self._vad: Optional[SpeechDetector] = None

    def _speech(self, audio: np.ndarray) -> tuple[np.ndarray, float]:
        if self._vad is None:
            from diarize_offline import SpeechDetector
            self._vad = SpeechDetector()
        regions = self._vad.regions(audio)
        if not regions:
            return np.zeros(0, np.float32), 0.0
        speech = np.concatenate([audio[a:b] for a, b in regions])
        return speech, len(speech) / SAMPLE_RATE

    def clip(self, audio: np.ndarray) -> tuple[np.ndarray | None, float]:
        speech, seconds = self._speech(np.asarray(audio, dtype=np.float32))
        vec = self.spans(speech, [(0, len(speech))])[0] if len(speech) else None
        return vec, (seconds if vec is not None else 0.0)

    def spans(self, audio: np.ndarray, spans: list[tuple[int, int]], stop=None) -> list:
        """One embedding per span: its pieces (at most 10 s) embedded one at a time, as the pipeline embeds its
        chunks (a padded batch would not do: WeSpeaker normalises its features over the whole input, padding
        included), averaged by length."""
        import torch

        piece = int(PIECE_S * SAMPLE_RATE)
        least = max(int(MIN_SPAN_S * SAMPLE_RATE), int(getattr(self.embedding, "min_num_samples", 0) or 0))
        out: list = []
        for a, b in spans:
            a, b = int(a), int(b)
            if b - a < least:
                out.append(None)
                continue
            edges = np.linspace(a, b, -(-(b - a) // piece) + 1).astype(int)
            acc = None
            for s, e in zip(edges[:-1], edges[1:]):
                wav = np.ascontiguousarray(audio[s:e], dtype=np.float32)[None, None]
                v = np.asarray(self.embedding(torch.from_numpy(wav))[0], dtype=np.float32)
                if np.all(np.isfinite(v)):
                    acc = _unit(v) * (e - s) + (0.0 if acc is None else acc)
            out.append(None if acc is None else _unit(acc))
            if stop is not None:
                stop()
        return out


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / (float(np.linalg.norm(v)) + 1e-9)
