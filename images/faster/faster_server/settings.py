from __future__ import annotations

from typing import Literal

from pydantic import Field

from stt_common import STTSettings
from stt_common.settings import GuardSettings

from .realtime.settings import RealtimeSettings


class FasterSettings(GuardSettings, RealtimeSettings, STTSettings):
    """STT_* environment; the shared ones are documented in images/README.md, the hallucination guards
    (STT_COMPRESSION_RATIO_THRESHOLD ...) in stt_common.settings.GuardSettings, live transcription's
    (STT_REALTIME_...) in realtime.settings.RealtimeSettings."""

    model: str = "Systran/faster-whisper-small"
    beam_size: int = Field(5, ge=1, le=20)
    # VAD (silero) on the sequential decoder: "true" always, "auto" only on audio longer than vad_min_seconds.
    # Off by default as in faster-whisper: bench/faster_long_audio.py measured it 0.6-0.8x as fast on a 6-min
    # meeting.
    vad_filter: Literal["auto", "true", "false"] = "false"
    vad_min_seconds: float = 60
    # batched pipeline (silero VAD cuts the speech, batch_size windows decoded at once) on audio of at least
    # batch_min_seconds; 0 = always the sequential decoder. Measured on a 6-min meeting, tiny.en int8, 2 threads:
    # 2.0x / 2.2x / 2.4x as fast as sequential at batch 4 / 8 / 16, same WER, peak RSS +146 / +367 / +432 MiB:
    # 4 buys most of the speed for the least memory. Short audio is one 30 s window either way and stays on the
    # sequential decoder (what a direct faster-whisper call does).
    batch_size: int = Field(4, ge=0)
    batch_min_seconds: float = 60
    # long audio is decoded and transcribed window by window: memory stays flat as audio grows
    chunk_seconds: float = Field(600, ge=30)
