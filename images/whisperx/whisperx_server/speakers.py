"""Who said each word: the diarizer's speaker turns laid over timed words, and segments cut where the
speaker changes.

The one place where speakers meet the transcript. :class:`SpeakerTurns` holds what a diarization backend
found (turns, and one embedding per speaker cluster where the backend gives them: the offline backend always,
pyannote's with ``return_embeddings``); :func:`assign_speakers` is the entry point: :func:`label_words` gives each timed word the speaker whose turns
cover most of it (the nearest turn when none does); :func:`split_at_speaker_changes` cuts a segment where the
speaker changes from one word to the next, so no segment spans two people. Words without times take their
neighbour's speaker; a segment without timed words takes the speaker of most of its span.

Pure numpy and dicts: no model, no torch (the unit tier tests it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SpeakerTurns:
    """Speaker turns of one recording: ``turns`` [(start s, end s, label)] sorted by start, and ``embeddings``
    {label: L2-normalised vector} per speaker cluster (empty where the backend gives none)."""
    turns: list[tuple[float, float, str]]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, df, embeddings=None) -> SpeakerTurns:
        """From a diarization DataFrame (start, end, speaker), the shape both backends return."""
        rows = [] if df is None else [(float(r.start), float(r.end), str(r.speaker)) for r in df.itertuples()]
        return cls(sorted(t for t in rows if t[1] > t[0]), dict(embeddings or {}))

    @property
    def speakers(self) -> list[str]:
        return sorted({t[2] for t in self.turns})

    def __post_init__(self):
        self.embeddings = {str(k): _unit(v) for k, v in self.embeddings.items() if v is not None}
        self._s = np.array([t[0] for t in self.turns], dtype=np.float64)
        self._e = np.array([t[1] for t in self.turns], dtype=np.float64)
        self._labels = [t[2] for t in self.turns]

    def speaker_of(self, start: float, end: float) -> str | None:
        """The speaker whose turns overlap [start, end] the most; without overlap, the nearest turn's (by the
        gap between the span and the turn); None when there are no turns."""
        if not self.turns:
            return None
        start, end = min(start, end), max(start, end)
        inter = np.minimum(self._e, end) - np.maximum(self._s, start)
        if end == start:   # a point in time: the turns that contain it
            inter = np.where((self._s <= start) & (start <= self._e), 1.0, -1.0)
        hit = np.flatnonzero(inter > 0)
        if len(hit):
            share: dict[str, float] = {}
            for i in hit:
                share[self._labels[i]] = share.get(self._labels[i], 0.0) + float(inter[i])
            return max(share.items(), key=lambda kv: kv[1])[0]
        gap = np.maximum(np.maximum(self._s - end, start - self._e), 0.0)
        return self._labels[int(np.argmin(gap))]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / (float(np.linalg.norm(v)) + 1e-9)


def _timed(w: dict) -> bool:
    return isinstance(w.get("start"), (int, float)) and isinstance(w.get("end"), (int, float)) \
        and not (np.isnan(w["start"]) or np.isnan(w["end"]))


def label_words(segments: list[dict], turns: SpeakerTurns) -> list[dict]:
    """Each segment's words with a ``speaker`` (copies; the input is left as is). Untimed words (digits an
    alignment model has no letters for) take the speaker of the timed word before them, or after them at the
    start of a segment; a segment without any timed word takes the speaker of most of its span."""
    out = []
    for seg in segments:
        seg = dict(seg)
        words = [dict(w) for w in seg.get("words") or []]
        for w in words:
            if _timed(w):
                w["speaker"] = turns.speaker_of(float(w["start"]), float(w["end"]))
        last = None
        for w in words:                      # untimed words: the previous timed word's speaker
            if "speaker" in w:
                last = w["speaker"]
            elif last is not None:
                w["speaker"] = last
        nxt = None
        for w in reversed(words):            # at a segment's start: the next one's
            if "speaker" in w:
                nxt = w["speaker"]
            elif nxt is not None:
                w["speaker"] = nxt
        if words and all("speaker" in w for w in words):
            seg["speaker"] = _majority(words)
        else:
            spk = turns.speaker_of(float(seg.get("start") or 0.0), float(seg.get("end") or 0.0))
            seg["speaker"] = spk
            for w in words:
                w.setdefault("speaker", spk)
        seg["words"] = words
        out.append(seg)
    return out


def _majority(words: list[dict]) -> str | None:
    """The speaker of most of the words' time (of most words where none is timed)."""
    t: dict = {}
    for w in words:
        d = float(w["end"]) - float(w["start"]) if _timed(w) else 0.0
        t[w["speaker"]] = t.get(w["speaker"], 0.0) + max(d, 1e-3)
    return max(t.items(), key=lambda kv: kv[1])[0] if t else None


def _join(words: list[dict]) -> str:
    """Words back into text: Whisper's words carry their own leading space (none inside a word: "l" + "'ai"),
    an alignment model's words none, so those are joined with spaces."""
    pieces = [str(w.get("word", "")) for w in words]
    if any(p.startswith(" ") for p in pieces):
        return "".join(pieces).strip()
    return " ".join(p.strip() for p in pieces if p.strip())


def split_at_speaker_changes(segments: list[dict], min_words: int = 1) -> list[dict]:
    """Labelled segments (:func:`label_words`) cut where the speaker changes between two words. Each piece keeps
    its words, its text is theirs, its times are its timed words' (the segment's at its outer edges where
    those are untimed). A run shorter than ``min_words`` words between two runs of one other speaker joins
    them (a one-word flicker of the diarizer's boundary)."""
    out = []
    for seg in segments:
        words = seg.get("words") or []
        if len(words) < 2:
            out.append(seg)
            continue
        runs: list[list[dict]] = []
        for w in words:
            if runs and runs[-1][0].get("speaker") == w.get("speaker"):
                runs[-1].append(w)
            else:
                runs.append([w])
        if min_words > 1:
            runs = _absorb_flickers(runs, min_words)
        if len(runs) == 1:
            out.append(seg)
            continue
        for i, run in enumerate(runs):
            timed = [w for w in run if _timed(w)]
            piece = {k: v for k, v in seg.items() if k not in ("words", "text", "start", "end", "speaker")}
            piece["text"] = _join(run)
            piece["start"] = float(timed[0]["start"]) if timed else (seg.get("start") if i == 0 else None)
            piece["end"] = float(timed[-1]["end"]) if timed else (seg.get("end") if i == len(runs) - 1 else None)
            piece["speaker"] = run[0].get("speaker")
            piece["words"] = run
            out.append(piece)
        _fill_missing_times(out)
    return out


def _absorb_flickers(runs: list[list[dict]], min_words: int) -> list[list[dict]]:
    changed = True
    while changed:
        changed = False
        for i in range(1, len(runs) - 1):
            a, b, c = runs[i - 1], runs[i], runs[i + 1]
            if len(b) < min_words and a[0].get("speaker") == c[0].get("speaker"):
                spk = a[0].get("speaker")
                for w in b:
                    w["speaker"] = spk
                runs[i - 1:i + 2] = [a + b + c]
                changed = True
                break
    return runs


def _fill_missing_times(segs: list[dict]) -> None:
    """A piece whose words are all untimed (rare) borrows its neighbours' edges."""
    for i, s in enumerate(segs):
        if s.get("start") is None:
            s["start"] = segs[i - 1]["end"] if i else 0.0
        if s.get("end") is None:
            s["end"] = segs[i + 1]["start"] if i + 1 < len(segs) and segs[i + 1].get("start") is not None \
                else s["start"]


def assign_speakers(segments: list[dict], turns: SpeakerTurns, per_word: bool = True) -> list[dict]:
    """Speakers per word, segments cut at speaker changes (``per_word``, the full-context order); or, for segments
    transcribed one speaker turn each (the turn-first order), the speaker of most of the segment's span for the
    segment and all its words."""
    if per_word:
        return split_at_speaker_changes(label_words(segments, turns))
    out = []
    for seg in segments:
        spk = turns.speaker_of(float(seg.get("start") or 0.0), float(seg.get("end") or 0.0))
        out.append({**seg, "speaker": spk, "words": [{**w, "speaker": spk} for w in seg.get("words") or []]})
    return out
