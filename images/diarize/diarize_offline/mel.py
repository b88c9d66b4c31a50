"""The mel power spectrogram resemblyzer's encoder was trained on (40 bands, 25 ms windows every 10 ms, 16 kHz),
computed with numpy alone. resemblyzer computes it with librosa, whose first call compiles numba code: 3.5 s
added to the first diarized request after every start of the service. Same numbers (checked against librosa in
tests/integration/diarize/test_mel.py), no compiler."""
from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = SAMPLE_RATE * 25 // 1000      # 400 samples
HOP = SAMPLE_RATE * 10 // 1000        # 160 samples
N_MELS = 40

# Slaney's mel scale (the Auditory Toolbox's, librosa's default): linear below 1 kHz, logarithmic above
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP,
                    f / _F_SP)


def mel_to_hz(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@functools.lru_cache(maxsize=4)
def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters between 0 Hz and sr / 2, each scaled to unit area (Slaney)."""
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)   # periodic, as for an STFT


def mel_spectrogram(wav: np.ndarray, sr: int = SAMPLE_RATE, n_fft: int = N_FFT, hop: int = HOP,
                    n_mels: int = N_MELS) -> np.ndarray:
    """(frames, n_mels) float32 mel power: frames centred on every `hop` samples (the signal padded with n_fft / 2
    zeros each side), a periodic Hann window, |rfft|², the Slaney filters."""
    wav = np.asarray(wav, dtype=np.float32)
    padded = np.pad(wav, n_fft // 2)
    count = 1 + (padded.size - n_fft) // hop
    if count <= 0:
        return np.zeros((0, n_mels), np.float32)
    frames = np.lib.stride_tricks.as_strided(padded, shape=(count, n_fft),
                                             strides=(padded.strides[0] * hop, padded.strides[0]))
    from scipy import fft   # single precision throughout, 20x numpy's own rfft here

    spectrum = fft.rfft(frames * _hann(n_fft), axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return power @ mel_filters(sr, n_fft, n_mels).T
