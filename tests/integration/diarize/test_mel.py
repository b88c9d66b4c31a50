"""The diarizer's numpy mel front-end gives resemblyzer's (librosa's) numbers, without librosa's numba compilation
on the service's first diarized request."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("resemblyzer", reason="resemblyzer is in .venv-ml (run with .venv-ml/bin/python)")

from diarize_offline.mel import mel_filters, mel_spectrogram  # noqa: E402


@pytest.mark.parametrize("samples", [401, 1600, 16000 * 3 + 37, 16000 * 20])
def test_mel_spectrogram_is_resemblyzers(samples):
    from resemblyzer.audio import wav_to_mel_spectrogram
    wav = (np.random.default_rng(samples).standard_normal(samples) * 0.1).astype(np.float32)
    ours, theirs = mel_spectrogram(wav), wav_to_mel_spectrogram(wav)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.max(np.abs(ours - theirs)) <= 1e-5 * np.max(np.abs(theirs))


def test_mel_filters_are_librosas_slaney_filters():
    import librosa
    np.testing.assert_allclose(mel_filters(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), atol=1e-8)


def test_embedding_a_chunk_compiles_nothing():
    """A fresh process that loads the encoder and embeds speech imports neither librosa's feature code nor numba."""
    code = ("import sys, numpy as np\n"
            "from diarize_offline.embedders import ResemblyzerEmbedder\n"
            "e = ResemblyzerEmbedder()\n"
            "x = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)\n"
            "e.forward(e.features(x)[None])\n"
            "print(sorted(m for m in ('numba', 'librosa.feature', 'librosa.core.spectrum') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
