"""Appended audio, in the session's input format, to the model's 16 kHz float32."""
from __future__ import annotations

import base64
import binascii

import numpy as np

from stt_common import SAMPLE_RATE

from .events import ProtocolError


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


G711 = {"audio/pcmu": _ulaw_table(), "audio/pcma": _alaw_table()}


class AudioInput:
    """One session's audio decoder: base64 in, 16 kHz float32 out, resampled with state across appends
    (libswresample through PyAV, as the file routes decode)."""

    def __init__(self, fmt: str = "audio/pcm", rate: int = 24000):
        self.format, self.rate = fmt, rate
        self._resampler = None
        if rate != SAMPLE_RATE:
            import av
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def pcm16(self, b64) -> np.ndarray:
        """The append's samples as int16 (ProtocolError on anything else than base64 of whole samples)."""
        if not isinstance(b64, str):
            raise ProtocolError("Invalid type for 'audio': expected a base64 string.", code="invalid_type",
                                param="audio")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("Invalid value for 'audio': not valid base64.", code="invalid_value",
                                param="audio") from None
        if self.format in G711:
            return G711[self.format][np.frombuffer(raw, dtype=np.uint8)]
        if len(raw) % 2:
            raise ProtocolError(f"Invalid value for 'audio': {len(raw)} bytes is not a whole number of 16-bit "
                                f"samples ({self.format}, {self.rate} Hz, mono, little-endian).",
                                code="invalid_value", param="audio")
        return np.frombuffer(raw, dtype="<i2")

    def decode(self, b64) -> np.ndarray:
        samples = self.pcm16(b64)
        if samples.size == 0:
            return np.zeros(0, np.float32)
        if self._resampler is None:
            return samples.astype(np.float32) / 32768.0
        import av
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = self.rate
        return self._collect(self._resampler.resample(frame))

    @staticmethod
    def _collect(frames) -> np.ndarray:
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
