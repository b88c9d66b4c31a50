"""Speaker labels: the backend (pyannote with HF_TOKEN, the offline one without), loading its pipeline into
the model manager (kind ``diarize``), and checking speaker-count hints."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from stt_common import JobStopped

from .errors import (DiarizationUnavailable, InvalidRequest, ServiceError, map_diarization_load_error,
                     token_malformed_error, token_missing_error)
from .speakers import SpeakerTurns

if TYPE_CHECKING:
    from .engine import EngineConfig
from .voices import Naming, Voice, apply_names, name_clusters

log = logging.getLogger("whisperx_server")

# the similarity (cosine, cluster against voice) from which a known voice names a cluster, per embedding model where
# STT_SPEAKER_THRESHOLD is unset: resemblyzer's vectors of two people on one phone line still score 0.75-0.86 and the
# same voice 0.88-0.99 (bench/README.md, "Known speakers"); WeSpeaker's (pyannote) spread wider, same-speaker trials
# around 0.5-0.8 and others near 0
DEFAULT_THRESHOLDS = {"offline": 0.86, "pyannote": 0.45}


def check_speaker_hints(num_speakers, min_speakers, max_speakers):
    for name, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if v is not None and (not isinstance(v, int) or v < 1 or v > 64):
            raise InvalidRequest(f"{name} must be a whole number between 1 and 64.", param=name)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise InvalidRequest("min_speakers must not exceed max_speakers.", param="min_speakers")
    if num_speakers is not None:
        if (min_speakers is not None and num_speakers < min_speakers) or \
           (max_speakers is not None and num_speakers > max_speakers):
            raise InvalidRequest("num_speakers must lie between min_speakers and max_speakers.", param="num_speakers")


class Diarization:
    """The engine's diarization part (a mixin of :class:`~whisperx_server.engine.WhisperXEngine`): needs
    ``self.cfg``, ``self.cache`` and ``self._setup_torch``."""

    cfg: EngineConfig      # set by WhisperXEngine (annotations only: the type checker's view of the engine)

    DIARIZE_RETRY_S = 60.0  # a refused pyannote download is answered from memory for this long

    def _init_diarization(self) -> None:
        self._diarize_failure: tuple | None = None
        self._voices: tuple | None = None     # (the diarizer, its voice embedder)

    def diarization_backend(self) -> str:
        b = self.cfg.diarization_backend
        if b == "auto":
            return "pyannote" if self.cfg.hf_token else "offline"
        return b

    def _offline_diarizer(self):
        def load():
            try:
                from diarize_offline import OfflineDiarizer
            except ImportError as exc:
                raise DiarizationUnavailable(
                    f"The offline diarization backend is not installed ({exc}); set HF_TOKEN to use pyannote.",
                    code="diarization_unavailable") from exc
            return OfflineDiarizer(device=self.cfg.device, threads=self.cfg.cpu_threads)
        return self.cache.load("diarize:offline", load, kind="diarize")

    def _pyannote_diarizer(self):
        token = self.cfg.hf_token
        model = self.cfg.diarization_model
        if not token:
            raise token_missing_error(model)
        if not token.startswith("hf_"):
            raise token_malformed_error()

        key = f"diarize:pyannote:{model}"
        failed = self._diarize_failure
        if failed and failed[0] == key and time.monotonic() - failed[1] < self.DIARIZE_RETRY_S:
            raise failed[2]

        def load():
            self._setup_torch()
            try:
                from whisperx.diarize import DiarizationPipeline
                return DiarizationPipeline(model_name=model, token=token, device=self.cfg.device)
            except Exception as exc:  # noqa: BLE001
                raise map_diarization_load_error(exc, token_set=True, model=model) from exc
        try:
            return self.cache.load(key, load, kind="diarize")
        except ServiceError as err:
            # a hub refusal does not change within seconds: answer it again without a new download attempt
            self._diarize_failure = (key, time.monotonic(), err)
            raise

    # ---------------------------------------------------------------- known speakers

    def voice_embedder(self):
        """The diarizing backend's own embedding model, for reference clips and segments
        (:mod:`.voice_embedding`)."""
        from .voice_embedding import OfflineVoices, PyannoteVoices
        if self.diarization_backend() == "pyannote":
            return self._voices_for(self._pyannote_diarizer(), lambda d: PyannoteVoices(
                d, self.cfg.diarization_model, self.cfg.device))
        return self._voices_for(self._offline_diarizer(), OfflineVoices)

    def _voices_for(self, diarizer, make):
        """One embedder per loaded diarizer (a reloaded one gets a new one)."""
        cached = self._voices
        if cached is None or cached[0] is not diarizer:
            cached = self._voices = (diarizer, make(diarizer))
        return cached[1]

    def enrollment_embedders(self) -> list:
        """The models an enrolled voice is embedded with: the diarizing backend's, and the offline backend's too
        where pyannote diarizes (its weights ship with the image), so the voice still works without the HF token."""
        out = [self.voice_embedder()]
        if self.diarization_backend() == "pyannote":
            from .voice_embedding import OfflineVoices
            try:
                out.append(OfflineVoices(self._offline_diarizer()))   # cheap: the diarizer is in the model cache
            except ServiceError as e:
                log.warning("enrollment without the offline backend's model: %s", e.message)
        return out

    def embed_references(self, clips: list, param: str = "known_speaker_references[]") -> list[Voice]:
        """Voices from reference clips [(name, 16 kHz audio)] in the diarizing backend's embedding space."""
        emb = self.voice_embedder() if clips else None
        out = []
        for name, audio in clips:
            assert emb is not None   # there are clips, so it was made
            vec, _seconds = emb.clip(audio)
            if vec is None:
                raise InvalidRequest(f"No speech was found in the reference clip for {name!r}.", param=param,
                                     code="invalid_speaker_reference")
            out.append(Voice(name, vec, emb.id))
        return out

    def speaker_threshold(self, requested: float | None = None) -> float:
        if requested is not None:
            return float(requested)
        if self.cfg.speaker_threshold is not None:
            return float(self.cfg.speaker_threshold)
        return DEFAULT_THRESHOLDS[self.diarization_backend()]

    def name_speakers(self, segments: list[dict], turns: SpeakerTurns, voices: list[Voice], threshold: float,
                      audio: np.ndarray, stop=None) -> tuple[list[dict], Naming]:
        """The clusters that known voices reach named after them, and each segment's ``speaker_similarity`` (its own
        speech embedded by the same model: :mod:`.voices`)."""
        emb = self.voice_embedder()
        wrong = sorted({v.embedder for v in voices if v.embedder != emb.id})
        if wrong:
            raise InvalidRequest(f"Known voices made by {', '.join(wrong)} cannot be compared with this server's "
                                 f"diarization model ({emb.id}): enroll them again.", param="speakers",
                                 code="speaker_model_mismatch")
        naming = name_clusters(turns.embeddings, voices, threshold)
        sr = 16000
        spans = [(int(float(s.get("start") or 0.0) * sr), int(float(s.get("end") or 0.0) * sr)) for s in segments]
        spans = [(max(0, a), min(len(audio), max(a, b))) for a, b in spans]
        vectors = emb.spans(audio, spans, stop)
        return apply_names(segments, naming, voices, vectors), naming

    def check_diarization(self):
        """Raise the configuration error diarization would meet (missing/invalid token, gated model)."""
        if self.diarization_backend() == "pyannote":
            self._pyannote_diarizer()
        else:
            self._offline_diarizer()

    def diarize(self, audio: np.ndarray, *, num_speakers=None, min_speakers=None, max_speakers=None, stop=None,
                timings: dict | None = None):
        """(:class:`~whisperx_server.speakers.SpeakerTurns`, the backend's name) for the whole recording: the turns
        and one embedding per speaker cluster. ``stop`` (raises to end
        the job) is called as the backend reports progress: whisperx's pyannote pipeline after each batch of its
        segmentation and embedding steps, the offline one between its steps and embedding batches. ``timings`` (a
        dict) receives the offline backend's seconds per step (vad, embedding, clustering)."""
        backend = self.diarization_backend()
        diarizer = self._pyannote_diarizer() if backend == "pyannote" else self._offline_diarizer()
        extra = {"timings": timings} if backend == "offline" and timings is not None else {}
        try:
            df, embeddings = diarizer(audio, num_speakers=num_speakers, min_speakers=min_speakers,
                                      max_speakers=max_speakers, return_embeddings=True,
                                      progress_callback=(lambda _pct: stop()) if stop is not None else None, **extra)
        except (ServiceError, JobStopped):
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("diarization failed")
            raise ServiceError(f"Diarization failed ({type(exc).__name__}).", code="diarization_failed") from exc
        return SpeakerTurns.from_frame(df, embeddings), backend
