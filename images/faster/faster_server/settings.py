from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from stt_common import STTSettings


class FasterSettings(STTSettings):
    """STT_* environment; the shared ones are documented in images/README.md."""

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

    # --- faster-whisper's guards against hallucination (loops such as "la vidéo de la vidéo de la vidéo" on poor
    # audio). A window whose decode fails a guard is decoded again at the next temperature of the fallback ladder
    # (requests with temperature=0); bench/multilingual.py measures their effect on WER and time.
    compression_ratio_threshold: Optional[float] = Field(
        2.4, description="A decode whose text gzip-compresses better than this ratio is a repetition loop: it is "
                         "retried at a higher temperature. None disables the check.")
    log_prob_threshold: Optional[float] = Field(
        -1.0, description="A decode whose average token log-probability is below this is retried at a higher "
                          "temperature; with no_speech_threshold it also decides silence. None disables it.")
    no_speech_threshold: Optional[float] = Field(
        0.6, ge=0, le=1, description="A window whose no-speech probability is above this AND whose average "
                                     "log-probability is below log_prob_threshold is silence: no text is emitted "
                                     "for it (the usual source of invented text on music or noise).")
    condition_on_previous_text: bool = Field(
        True, description="Feed the previous window's text as the prompt of the next. More consistent spelling "
                          "and style; False stops a loop from carrying over from one window to the next.")
    hallucination_silence_threshold: Optional[float] = Field(
        None, gt=0, description="With word timestamps on: skip silent stretches longer than this many seconds "
                                "around a suspected hallucination. None: off (faster-whisper's default).")

    @field_validator("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold",
                     "hallucination_silence_threshold", mode="before")
    @classmethod
    def _off_is_none(cls, v):
        # from the environment: STT_COMPRESSION_RATIO_THRESHOLD=none (or off, or empty) disables that guard
        return None if isinstance(v, str) and v.strip().lower() in ("", "none", "off") else v

    @property
    def guards(self) -> dict:
        """The guards as faster-whisper's transcribe() keywords."""
        return {"compression_ratio_threshold": self.compression_ratio_threshold,
                "log_prob_threshold": self.log_prob_threshold, "no_speech_threshold": self.no_speech_threshold,
                "condition_on_previous_text": self.condition_on_previous_text,
                "hallucination_silence_threshold": self.hallucination_silence_threshold}
