"""Speaker-embedding models whose weights ship inside their pip packages."""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


class ResemblyzerEmbedder:
    """resemblyzer's GE2E LSTM (pretrained.pt inside the wheel): 40-band mel, 10 ms hop, 256-d output."""

    dim = 256

    def __init__(self, device: str = "cpu"):
        import torch
        from resemblyzer import VoiceEncoder

        self.torch = torch
        self.model = VoiceEncoder(device=device, verbose=False)
        self.model.eval()
        self.device = device

    def _mel(self, chunk: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import wav_to_mel_spectrogram

        # resemblyzer normalises loudness to -30 dBFS before its mel front-end
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) + 1e-9
        chunk = chunk * (10 ** (-30 / 20) / rms)
        return wav_to_mel_spectrogram(chunk)

    def embed(self, audio: np.ndarray, spans, batch: int = 128) -> np.ndarray:
        """One L2-normalised embedding per (start, end) sample span."""
        torch = self.torch
        out = np.zeros((len(spans), self.dim), dtype=np.float32)
        # group spans by length so each batch is one tensor; windows are mostly the same length
        order = sorted(range(len(spans)), key=lambda i: spans[i][1] - spans[i][0])
        i = 0
        with torch.inference_mode():
            while i < len(order):
                n_frames = None
                mels, idx = [], []
                while i < len(order) and len(idx) < batch:
                    a, b = spans[order[i]]
                    m = self._mel(audio[a:b])
                    if n_frames is None:
                        n_frames = m.shape[0]
                    elif m.shape[0] != n_frames:
                        break
                    mels.append(m)
                    idx.append(order[i])
                    i += 1
                x = torch.from_numpy(np.stack(mels)).to(self.device)
                out[idx] = self.model(x).cpu().numpy()
        return out
