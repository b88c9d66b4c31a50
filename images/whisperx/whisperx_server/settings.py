"""The WhisperX service's STT_* settings and what the engine is built from (the one environment parser), shared by
the API (app.py) and the job worker (worker.py)."""
from __future__ import annotations

import os
from typing import Literal, Optional

from pydantic import Field, field_validator

from stt_common import STTSettings
from stt_common.settings import GuardSettings

from .engine import EngineConfig
from .errors import DEFAULT_DIARIZATION_MODEL


class Settings(GuardSettings, STTSettings):
    """STT_* environment (images/README.md); the hallucination guards (STT_COMPRESSION_RATIO_THRESHOLD ...) are
    stt_common.settings.GuardSettings, as on the faster service; whisperx-only knobs below. HF_TOKEN is read as
    is."""
    model: str = "base"
    batch_size: int = Field(8, ge=1)
    diarization_backend: str = "auto"
    diarization_model: str = DEFAULT_DIARIZATION_MODEL
    align_models: str = ""          # "en=/models/wav2vec2-en,fr=org/model"
    align_model_dir: Optional[str] = None
    window_seconds: float = Field(1200, gt=30)
    # diarize=true: "words" transcribes with full context and gives each word its speaker, segments cut at speaker
    # changes; "turns" transcribes each speaker turn on its own (no segment spans two speakers; short turns lose
    # their context: bench/README.md, "Diarized transcripts")
    diarize_order: Literal["words", "turns"] = "words"
    # where speech is, for the ASR's 30 s chunks: "silero" (silero-vad's ONNX model, shipped in its wheel) or
    # "pyannote" (whisperx's default segmentation model: about ten times slower on CPU)
    vad: Literal["silero", "pyannote"] = "silero"
    # known speakers (whisperx_server/voices.py): the similarity of a speaker cluster to a known voice from which the
    # cluster takes the voice's name; unset: the diarization backend's own default (diarization.DEFAULT_THRESHOLDS)
    speaker_threshold: Optional[float] = Field(None, ge=0, le=1)
    # enrolled voices (POST /v1/speakers): one file of embeddings per caller in this folder; empty = no enrollment
    speakers_dir: str = ""
    max_voices: int = Field(100, ge=1)                 # enrolled voices per caller
    max_reference_mb: float = Field(4, gt=0, le=32)    # one known_speaker_references[] data URL, as sent

    @field_validator("speaker_threshold", mode="before")
    @classmethod
    def _empty_threshold(cls, v):
        return None if isinstance(v, str) and not v.strip() else v


def cuda_devices() -> int:
    """GPUs torch sees: 0 without one, without its driver or without the NVIDIA container runtime (also 0 in an
    image built on a CPU-only torch index). The ASR's CTranslate2 uses the cuBLAS/cuDNN of torch's nvidia wheels."""
    import torch
    return torch.cuda.device_count()


def engine_config(settings: Settings, env=os.environ) -> EngineConfig:
    align = {}
    for item in settings.align_models.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            align[k.strip()] = v.strip()
    backend = settings.diarization_backend.strip().lower() or "auto"
    if backend not in ("auto", "pyannote", "offline"):
        raise ValueError("STT_DIARIZATION_BACKEND must be auto, pyannote or offline")
    device = "cuda" if settings.device == "cuda" else "cpu"
    if settings.device == "auto":
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    return EngineConfig(
        default_model=settings.model, device=device,
        compute_type=settings.compute_type or ("float16" if device == "cuda" else "int8"),
        threads=settings.cpu_threads, batch_size=settings.batch_size, models_dir=settings.models_dir,
        model_ttl=settings.model_ttl, model_load_timeout=settings.model_load_timeout,
        max_loaded_models=settings.max_loaded_models, hf_token=(env.get("HF_TOKEN") or "").strip(),
        diarization_backend=backend, diarization_model=settings.diarization_model, align_models=align,
        align_cache_dir=settings.align_model_dir, window_s=settings.window_seconds,
        diarize_order=settings.diarize_order, speaker_threshold=settings.speaker_threshold, vad=settings.vad,
        allow_downloads=settings.allow_model_downloads, guards=settings.guards)
