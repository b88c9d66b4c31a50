"""Audio windows: where long audio is cut (the quietest moment near each boundary), speaker turns as ASR
spans, and spans grouped into windows. Pure numpy: no model, no torch."""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def quiet_cut_points(audio: np.ndarray, window_s: float, search_s: float = 5.0) -> list[int]:
    """Sample offsets splitting ``audio`` into windows of about ``window_s`` seconds, each cut at the
    quietest 100 ms within ``search_s`` seconds before the nominal boundary."""
    n = len(audio)
    win = int(window_s * SAMPLE_RATE)
    if win <= 0 or n <= win:
        return [0, n]
    cuts = [0]
    frame = SAMPLE_RATE // 10
    while n - cuts[-1] > win:
        nominal = cuts[-1] + win
        lo = max(cuts[-1] + frame, nominal - int(search_s * SAMPLE_RATE))
        seg = np.asarray(audio[lo:nominal], dtype=np.float32)
        k = len(seg) // frame
        if k >= 1:
            energy = np.square(seg[: k * frame].reshape(k, frame)).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * frame + frame // 2
        else:
            cut = nominal
        cuts.append(cut)
    cuts.append(n)
    return cuts


def speaker_turn_spans(turns, audio, max_s: float = 28.0, merge_gap: float = 0.6, pad: float = 0.15) -> list:
    """(start_sample, end_sample) spans to transcribe: the diarizer's turns ((start s, end s, speaker) tuples, or
    a DataFrame of them), consecutive turns of one speaker merged across short gaps, turns longer than ``max_s``
    cut at quiet points (whisper reads 30 s at a time)."""
    n = len(audio)
    if hasattr(turns, "itertuples"):
        turns = [(r.start, r.end, r.speaker) for r in turns.itertuples()]
    rows = sorted((float(a), float(b), str(c)) for a, b, c in turns or [])
    turns = []   # the merged turns, [start s, end s, speaker] each
    for st, en, spk in rows:
        if en <= st:
            continue
        if turns and turns[-1][2] == spk and st - turns[-1][1] <= merge_gap:
            turns[-1][1] = max(turns[-1][1], en)
        else:
            turns.append([st, en, spk])
    spans = []
    for st, en, _ in turns:
        a = max(0, int((st - pad) * SAMPLE_RATE))
        b = min(n, int((en + pad) * SAMPLE_RATE))
        if b - a < SAMPLE_RATE // 10:
            continue
        cuts = quiet_cut_points(audio[a:b], max_s, search_s=min(5.0, max_s / 3))
        spans += [(a + c0, a + c1) for c0, c1 in zip(cuts[:-1], cuts[1:]) if c1 > c0]
    return spans


def group_spans(spans: list, window_s: float) -> list:
    """Spans grouped into windows of at most ``window_s`` seconds: [(w0, w1, [spans])]."""
    groups: list = []
    limit = int(window_s * SAMPLE_RATE)
    for a, b in spans:
        if groups and b - groups[-1][0] <= limit:
            g = groups[-1]
            groups[-1] = (g[0], max(g[1], b), g[2] + [(a, b)])
        else:
            groups.append((a, b, [(a, b)]))
    return groups
