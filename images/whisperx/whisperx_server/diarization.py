"""Speaker labels: the backend (pyannote with HF_TOKEN, the offline one without), loading its pipeline into
the model manager (kind ``diarize``), and checking speaker-count hints."""
from __future__ import annotations

import logging
import time

import numpy as np

from stt_common import JobStopped

from .errors import (DiarizationUnavailable, InvalidRequest, ServiceError, map_diarization_load_error,
                     token_malformed_error, token_missing_error)
from .speakers import SpeakerTurns

log = logging.getLogger("whisperx_server")


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

    DIARIZE_RETRY_S = 60.0  # a refused pyannote download is answered from memory for this long

    def _init_diarization(self) -> None:
        self._diarize_failure: tuple | None = None

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
