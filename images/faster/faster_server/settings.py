from __future__ import annotations

from typing import Literal

from pydantic import Field

from stt_common import STTSettings


class FasterSettings(STTSettings):
    """STT_* environment; the shared ones are documented in images/README.md."""

    model: str = "Systran/faster-whisper-small"
    beam_size: int = Field(5, ge=1, le=20)
    # VAD (silero): "true" always, "auto" only on audio longer than vad_min_seconds; off by default as in
    # faster-whisper (on continuous speech it costs time; on long recordings with silence it saves time)
    vad_filter: Literal["auto", "true", "false"] = "false"
    vad_min_seconds: float = 60
    # batched pipeline (VAD-chunked, batch_size windows at once); 0 = the sequential decoder
    batch_size: int = Field(0, ge=0)
    batch_min_seconds: float = 120
    # long audio is decoded and transcribed window by window: memory stays flat as audio grows
    chunk_seconds: float = Field(600, ge=30)
