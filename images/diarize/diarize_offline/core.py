"""Offline speaker diarization: silero-vad regions, shipped speaker embeddings, agglomerative clustering.

No network and no HuggingFace token: every weight file comes inside a pip package
(silero-vad's ONNX VAD, resemblyzer's pretrained.pt).
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .vad import SpeechDetector

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass
class Params:
    # VAD (silero-vad sequence ONNX model)
    vad_threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    # embedding windows
    window_s: float = 1.5
    step_s: float = 0.75
    min_window_s: float = 0.5
    # windows per clustering unit
    chunk_windows: int = 3
    # units shorter than this are left out of clustering and attached to the nearest speaker
    min_unit_s: float = 1.2
    # automatic count: best silhouette over 2..max_auto_speakers (cosine, average linkage, on
    # mean-subtracted embeddings), then clusters whose raw centroids are this similar are merged
    max_auto_speakers: int = 10
    same_speaker_sim: float = 0.9
    silhouette_tie: float = 0.01
    # clusters with less speech than this are folded into the nearest larger one (auto count only)
    min_cluster_s: float = 2.0
    min_cluster_frac: float = 0.01
    # output smoothing
    fill_gap_s: float = 0.25
    min_segment_s: float = 0.0
    # re-label windows inside long regions (speaker changes without a pause)
    resegment: bool = True
    batch_windows: int = 64
    vad_block_s: float = 300.0


def load_audio(audio) -> np.ndarray:
    """16 kHz mono float32 from an array or a file path (any format ffmpeg reads)."""
    if isinstance(audio, np.ndarray):
        a = audio
        if a.ndim > 1:
            a = a.mean(axis=0 if a.shape[0] < a.shape[-1] else 1)
        return np.ascontiguousarray(a, dtype=np.float32)
    if hasattr(audio, "detach"):  # torch tensor
        return load_audio(audio.detach().cpu().numpy())
    path = os.fspath(audio)
    try:
        import soundfile as sf

        info = sf.info(path)
        if info.samplerate == SAMPLE_RATE:
            data, _ = sf.read(path, dtype="float32", always_2d=True)
            return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    except Exception:  # not readable by libsndfile: let ffmpeg decode it
        pass
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "f32le", "-ac", "1",
         "-ar", str(SAMPLE_RATE), "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(out, dtype=np.float32).copy()


class OfflineDiarizer:
    """Same call shape as whisperx.diarize.DiarizationPipeline: audio in, speaker turns DataFrame out."""

    def __init__(self, device: str = "cpu", threads: int | None = None, params: Params | None = None,
                 embedder: str = "resemblyzer"):
        import torch

        self.params = params or Params()
        # One torch thread by default: the embedder's small-batch LSTM/CNN gains little from more, and
        # on a busy 2-core host two OpenMP threads ran the LSTM 4-5x slower than one (bench/diarization.py).
        self.threads = int(threads) if threads else 1
        self._torch = torch
        self.device = device
        p = self.params
        self.vad = SpeechDetector(p.vad_threshold, p.min_speech_ms, p.min_silence_ms, p.speech_pad_ms)
        from .embedders import EMBEDDERS

        if embedder not in EMBEDDERS:
            raise ValueError(f"unknown embedder {embedder!r}; one of {sorted(EMBEDDERS)}")
        self.embedder = EMBEDDERS[embedder](device=device)
        self._warm_up()

    def _warm_up(self):
        """Import the lazy modules and run each model once, so the first request is not the slow one."""
        import scipy.cluster.hierarchy  # noqa: F401

        noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE * 2).astype(np.float32)
        self.vad.regions(noise)
        with self._threads():
            self.embedder.embed(noise, [(0, noise.size)], [(0, 0, int(self.params.window_s * SAMPLE_RATE))])

    # ---------------------------------------------------------------- steps
    def speech_regions(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions in samples, from silero-vad."""
        return self.vad.regions(audio)

    def windows(self, regions):
        """(region index, start sample, end sample) of the embedding windows inside each region."""
        p = self.params
        win, step, min_win = (int(x * SAMPLE_RATE) for x in (p.window_s, p.step_s, p.min_window_s))
        out = []
        for r, (s, e) in enumerate(regions):
            n = e - s
            if n <= win:
                if n >= min_win // 2:
                    out.append((r, s, e))
                continue
            starts = list(range(s, e - win + 1, step))
            if starts[-1] + win < e:
                starts.append(e - win)
            out.extend((r, a, a + win) for a in starts)
        return out

    # ---------------------------------------------------------------- voices
    def voice_embedding(self, audio) -> tuple[np.ndarray | None, float]:
        """(the embedding of the voice speaking in ``audio``, seconds of speech it came from): the mean of its
        speech windows' raw embeddings, L2-normalised, as :meth:`diarize` makes each speaker's. (None, 0.0)
        without speech. A clip is short work: torch's process-wide thread count is left as it is (this may run
        beside a request's diarization, which sets its own)."""
        audio = load_audio(audio)
        regions = self.speech_regions(audio)
        wins = self.windows(regions)
        if not wins:
            return None, 0.0
        emb = self.embedder.embed(audio, regions, wins, batch=self.params.batch_windows)
        m = emb.mean(axis=0)
        return m / (np.linalg.norm(m) + 1e-9), sum(e - s for s, e in regions) / SAMPLE_RATE

    def span_embeddings(self, audio: np.ndarray, spans, progress=None) -> list[np.ndarray | None]:
        """One embedding per (start, end) span in samples (a transcript's segment): the mean of its windows' raw
        embeddings, L2-normalised; None for a span too short for a window. ``progress`` as in :meth:`embed`."""
        spans = [(int(a), int(b)) for a, b in spans]
        wins = self.windows(spans)
        out: list[np.ndarray | None] = [None] * len(spans)
        if not wins:
            return out
        with self._threads():
            emb = self.embedder.embed(audio, spans, wins, batch=self.params.batch_windows, progress=progress)
        region = np.array([r for r, _, _ in wins])
        for r in np.unique(region):
            m = emb[region == r].mean(axis=0)
            out[int(r)] = m / (np.linalg.norm(m) + 1e-9)
        return out

    def _threads(self):
        """torch's thread count set to ours for a block (process-wide in torch: restored after)."""
        @contextmanager
        def block():
            prev = self._torch.get_num_threads()
            self._torch.set_num_threads(self.threads)
            try:
                yield
            finally:
                self._torch.set_num_threads(prev)
        return block()

    # ---------------------------------------------------------------- main
    def __call__(self, audio, num_speakers=None, min_speakers=None, max_speakers=None, progress_callback=None,
                 return_embeddings=False, timings: dict | None = None, **_ignored):
        """Speaker turns as a DataFrame (start, end, speaker), whisperx's DiarizationPipeline's shape.
        ``progress_callback`` (a percentage) is called between the steps and after each embedding batch, as
        whisperx's pipeline calls it: a caller stops the run by raising from it. ``return_embeddings``: also
        {speaker: embedding} (the mean of the speaker's window embeddings, L2-normalised; a list of floats as
        whisperx's pipeline returns them), as the tuple (df, embeddings). ``timings`` (a dict) receives the seconds
        of each step: vad, embedding, clustering."""
        import pandas as pd

        audio = load_audio(audio)
        embeddings: dict = {}
        with self._threads():
            segments = self.diarize(audio, num_speakers, min_speakers, max_speakers, progress=progress_callback,
                                    embeddings=embeddings, timings=timings)
        df = pd.DataFrame(segments, columns=["start", "end", "speaker"])
        if len(df):
            df = df.sort_values("start", kind="stable").reset_index(drop=True)
        if return_embeddings:
            return df, {k: v.tolist() for k, v in embeddings.items()}
        return df

    def diarize(self, audio: np.ndarray, num_speakers=None, min_speakers=None, max_speakers=None, progress=None,
                embeddings: dict | None = None, timings: dict | None = None):
        """[(start s, end s, label)]; ``embeddings`` (a dict) receives {label: embedding} per speaker, ``timings``
        the seconds of each step."""
        p = self.params
        report = progress or (lambda _pct: None)
        timings = {} if timings is None else timings
        t0 = time.monotonic()
        regions = self.speech_regions(audio)
        timings["vad"] = time.monotonic() - t0
        report(10.0)
        wins = self.windows(regions)
        if not wins:
            return []
        n_wins = len(wins)
        t0 = time.monotonic()
        emb = self.embedder.embed(audio, regions, wins, batch=p.batch_windows,
                                  progress=lambda done: report(10.0 + 80.0 * done / n_wins))
        timings["embedding"] = time.monotonic() - t0
        t0 = time.monotonic()
        win_region = np.array([r for r, _, _ in wins])
        raw = emb
        emb = emb - emb.mean(axis=0, keepdims=True)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9

        # clustering units: runs of up to `chunk_windows` consecutive windows of one region, so a
        # region holding a speaker change or an overlap yields short mixed units, not one long one
        win_chunk = self._chunks(win_region)
        n_chunks = win_chunk.max() + 1
        chunk_emb = np.zeros((n_chunks, emb.shape[1]), dtype=np.float64)
        np.add.at(chunk_emb, win_chunk, emb)
        chunk_emb /= np.linalg.norm(chunk_emb, axis=1, keepdims=True) + 1e-9
        chunk_raw = np.zeros_like(chunk_emb)
        np.add.at(chunk_raw, win_chunk, raw)
        first = np.full(n_chunks, np.iinfo(np.int64).max)
        last = np.zeros(n_chunks, dtype=np.int64)
        np.minimum.at(first, win_chunk, np.array([a for _, a, _ in wins]))
        np.maximum.at(last, win_chunk, np.array([b for _, _, b in wins]))
        chunk_dur = (last - first) / SAMPLE_RATE

        # short units give noisy embeddings: cluster the long ones, then attach the short ones
        long_ = chunk_dur >= p.min_unit_s
        if long_.sum() < 2:
            long_[:] = True
        labels = np.empty(n_chunks, dtype=int)
        labels[long_] = self.cluster(chunk_emb[long_], chunk_dur[long_], num_speakers, min_speakers,
                                     max_speakers, raw=chunk_raw[long_])
        k = labels[long_].max() + 1
        centroids = np.stack([chunk_emb[long_][labels[long_] == c].mean(axis=0) for c in range(k)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-9
        if (~long_).any():
            labels[~long_] = (chunk_emb[~long_] @ centroids.T).argmax(axis=1)
        win_label = labels[win_chunk]

        if p.resegment and k > 1:
            win_label = self._resegment(emb, win_region, win_label, centroids)

        report(95.0)
        segs = self._to_segments(regions, wins, win_label)
        order = self._speaker_order(segs)
        timings["clustering"] = time.monotonic() - t0
        if embeddings is not None:
            for c, i in order.items():
                e = raw[win_label == c].mean(axis=0)
                embeddings[f"SPEAKER_{i:02d}"] = e / (np.linalg.norm(e) + 1e-9)
        return [(s, e, f"SPEAKER_{order[c]:02d}") for s, e, c in segs]

    def _chunks(self, win_region):
        """Chunk id per window: consecutive windows of one region, at most chunk_windows per chunk,
        split evenly (7 windows with chunk_windows=3 -> 3+2+2)."""
        c = self.params.chunk_windows
        out = np.empty(len(win_region), dtype=int)
        nxt = 0
        i = 0
        while i < len(win_region):
            j = i
            while j + 1 < len(win_region) and win_region[j + 1] == win_region[i]:
                j += 1
            n = j - i + 1
            parts = -(-n // c)
            out[i: j + 1] = nxt + (np.arange(n) * parts) // n
            nxt += parts
            i = j + 1
        return out

    def cluster(self, x, dur, num_speakers=None, min_speakers=None, max_speakers=None, raw=None):
        """Speaker label per unit. x: mean-subtracted, L2-normalised unit embeddings; dur: seconds per
        unit; raw: the units' embeddings before mean subtraction (for the same-speaker check).

        One average-linkage tree (cosine) is cut at every candidate count; tiny clusters are folded
        into their nearest neighbour; the count with the best silhouette wins. Clusters whose raw
        centroids are as close as one voice to itself are then merged (this also finds a single
        speaker, which mean subtraction and silhouette cannot).
        """
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import pdist, squareform

        n = len(x)
        if n == 1:
            return np.zeros(1, dtype=int)
        p = self.params
        dist = pdist(x, metric="cosine")
        tree = linkage(dist, method="average")

        def cut(k):
            return _relabel(fcluster(tree, t=k, criterion="maxclust"))

        if num_speakers:
            return cut(min(int(num_speakers), n))
        lo = max(1, int(min_speakers or 1))
        hi = min(n, int(max_speakers or p.max_auto_speakers))
        square = squareform(dist)
        best, labels = -2.0, None
        # best count by silhouette up to the upper bound; a lower bound is applied afterwards
        for k in range(2, min(hi, n - 1) + 1):
            lab = self._fold_small(x, dur, cut(k))
            if lab.max() + 1 < 2:
                continue
            score = silhouette(square, lab)
            # near-ties go to the larger count: the same-voice merge below undoes needless splits
            if score > best - p.silhouette_tie:
                best, labels = max(best, score), lab
        if labels is None:  # n too small for a silhouette, or lo == hi == 1
            labels = cut(max(1, min(lo, n)))
        if raw is not None:
            labels = self._merge_same_voice(raw, labels, lo)
        k = labels.max() + 1
        if k < lo or k > hi:
            labels = cut(min(max(k, lo), hi))
        return labels

    def _merge_same_voice(self, raw, labels, lo):
        """Merge the closest pair of clusters while their raw centroids look like one voice."""
        thr = self.params.same_speaker_sim
        while labels.max() + 1 > lo:
            k = labels.max() + 1
            c = np.stack([raw[labels == i].mean(axis=0) for i in range(k)])
            c /= np.linalg.norm(c, axis=1, keepdims=True) + 1e-9
            sim = c @ c.T
            np.fill_diagonal(sim, -1)
            i, j = np.unravel_index(np.argmax(sim), sim.shape)
            if sim[i, j] < thr:
                break
            labels = _relabel(np.where(labels == j, i, labels))
        return labels

    def _fold_small(self, x, dur, labels):
        """Merge clusters with too little speech into the nearest cluster that has enough."""
        p = self.params
        total = dur.sum()
        size = np.bincount(labels, weights=dur)
        big = np.flatnonzero(size >= max(p.min_cluster_s, p.min_cluster_frac * total))
        if len(big) == 0 or len(big) == len(size):
            return _relabel(labels)
        cent = np.stack([x[labels == c].mean(axis=0) for c in big])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-9
        out = labels.copy()
        for i in np.flatnonzero(~np.isin(labels, big)):
            out[i] = big[int(np.argmax(cent @ x[i]))]
        return _relabel(out)

    def _resegment(self, emb, win_region, win_label, centroids):
        """Inside regions, let runs of >= 2 windows that clearly prefer another speaker switch to it."""
        sim = emb @ centroids.T
        best = sim.argmax(axis=1)
        margin = sim[np.arange(len(sim)), best] - sim[np.arange(len(sim)), win_label]
        want = np.where(margin > 0.1, best, win_label)
        out = win_label.copy()
        i = 0
        n = len(want)
        while i < n:
            j = i
            while j + 1 < n and win_region[j + 1] == win_region[i] and want[j + 1] == want[i]:
                j += 1
            if want[i] != win_label[i] and j - i + 1 >= 2:
                out[i: j + 1] = want[i]
            i = j + 1
        return out

    def _to_segments(self, regions, wins, win_label):
        """Cut each region at midpoints between windows of different labels; fill short same-speaker gaps."""
        p = self.params
        segs = []
        by_region: dict[int, list[tuple[int, int, int]]] = {}
        for (r, a, b), lab in zip(wins, win_label):
            by_region.setdefault(r, []).append((a, b, int(lab)))
        for r, ws in by_region.items():
            s, e = regions[r]
            cur_start, cur_lab = s, ws[0][2]
            for (a0, b0, _l0), (a1, b1, l1) in zip(ws, ws[1:]):
                if l1 != cur_lab:
                    cut = ((a0 + b0) // 2 + (a1 + b1) // 2) // 2
                    segs.append([cur_start / SAMPLE_RATE, cut / SAMPLE_RATE, cur_lab])
                    cur_start, cur_lab = cut, l1
            segs.append([cur_start / SAMPLE_RATE, e / SAMPLE_RATE, cur_lab])
        segs.sort()
        merged = []
        for seg in segs:
            if merged and merged[-1][2] == seg[2] and seg[0] - merged[-1][1] < p.fill_gap_s:
                merged[-1][1] = max(merged[-1][1], seg[1])
            else:
                merged.append(seg)
        return [(round(s, 3), round(e, 3), c) for s, e, c in merged if e - s >= p.min_segment_s]

    @staticmethod
    def _speaker_order(segs):
        """SPEAKER_00 is whoever talks first, like pyannote's labels read."""
        order = {}
        for _, _, c in segs:
            order.setdefault(c, len(order))
        return order

    @staticmethod
    def annotation(df, uri: str = "audio"):
        from pyannote.core import Annotation, Segment

        ann = Annotation(uri=uri)
        for i, row in enumerate(df.itertuples(index=False)):
            ann[Segment(float(row.start), float(row.end)), i] = row.speaker
        return ann


def silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient over a square distance matrix (sklearn's ``silhouette_score`` with
    ``metric="precomputed"``, whose import alone cost a cold start seconds): per point, a = mean distance to the
    rest of its cluster, b = the lowest mean distance to another cluster, s = (b - a) / max(a, b), 0 in a cluster
    of one. Needs 2 <= clusters <= points - 1."""
    labels = np.asarray(labels)
    n, k = len(labels), int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((n, k))
    for c in range(k):
        sums[:, c] = dist[:, labels == c].sum(axis=1)
    own = counts[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    other = sums / np.where(counts > 0, counts, np.inf)
    other[np.arange(n), labels] = np.inf
    b = other.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.nan_to_num((b - a) / np.maximum(a, b))
    s[own == 1] = 0.0
    return float(s.mean())


def _relabel(labels):
    _, inv = np.unique(labels, return_inverse=True)
    return inv
