"""Known speakers by name: voices (a name and one embedding in the diarization backend's own embedding space) laid
over the diarizer's anonymous speaker clusters, and each segment's similarity to the voice it was given.

Where voices come from (:mod:`.voice_fields`: a request's ``known_speaker_names[]`` with
``known_speaker_references[]``, and its ``speakers=`` naming voices enrolled with ``POST /v1/speakers``,
:mod:`.voice_store`) does not matter here: a :class:`Voice` is a name and a unit vector, tagged with the embedder
that made it, so that a voice from one model is never compared with clusters of another.

The decision (:func:`name_clusters`): the cosine similarity of every cluster's embedding (the mean of its speech,
:attr:`.speakers.SpeakerTurns.embeddings`) with every voice; pairs are taken best first, one name per cluster and
one cluster per name (a known speaker is one person, and so is a cluster), while the similarity reaches the
threshold. A cluster no voice reaches keeps its anonymous label (``SPEAKER_01``). Each segment then reports
``speaker_similarity``: its own speech's embedding against the voice it was named after (or, for an anonymous
segment, against the closest known voice): a low value marks a segment worth checking.

Pure numpy and dicts: no model (the unit tier tests it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Voice:
    """A known speaker: ``name``, a unit ``vector`` made by the embedder ``embedder`` (its identity:
    ``offline:resemblyzer``, ``pyannote:<model>``), and where it came from (``reference``: a clip sent with the
    request; ``enrolled``: the caller's voice store)."""
    name: str
    vector: np.ndarray
    embedder: str
    source: str = "reference"

    def __post_init__(self):
        v = np.asarray(self.vector, dtype=np.float32).ravel()
        object.__setattr__(self, "vector", v / (float(np.linalg.norm(v)) + 1e-9))

    def as_param(self) -> dict:
        """The JSON form a job carries to its worker (the vector only: never the audio)."""
        return {"name": self.name, "vector": [round(float(x), 6) for x in self.vector], "embedder": self.embedder,
                "source": self.source}

    @classmethod
    def from_param(cls, d: dict) -> Voice:
        return cls(str(d["name"]), np.asarray(d["vector"], dtype=np.float32), str(d["embedder"]),
                   str(d.get("source") or "reference"))


@dataclass
class Naming:
    """The outcome for one recording: ``names`` {cluster label: voice name} for the clusters a voice reached,
    ``similarity`` {cluster label: its similarity to its voice, or to the closest voice where unnamed}, and per
    voice the cluster it went to (None: not found in this recording)."""
    names: dict[str, str] = field(default_factory=dict)
    similarity: dict[str, float] = field(default_factory=dict)
    found: dict[str, str | None] = field(default_factory=dict)
    threshold: float = 0.0

    def summary(self, voices: list[Voice]) -> dict:
        """``diarization.known_speakers`` of an answer: per name, the cluster it labels and how similar they are."""
        out = {}
        for v in voices:
            label = self.found.get(v.name)
            out[v.name] = {"source": v.source, "speaker_label": label,
                           "similarity": None if label is None else round(self.similarity[label], 3)}
        return out


def similarity_matrix(clusters: dict[str, np.ndarray], voices: list[Voice]) -> tuple[list[str], np.ndarray]:
    labels = sorted(clusters)
    if not labels or not voices:
        return labels, np.zeros((len(labels), len(voices)), dtype=np.float32)
    c = np.stack([_unit(clusters[k]) for k in labels])
    v = np.stack([x.vector for x in voices])
    return labels, c @ v.T


def name_clusters(clusters: dict[str, np.ndarray], voices: list[Voice], threshold: float) -> Naming:
    """Best pairs first, one to one, while the similarity reaches ``threshold`` (see the module's docstring)."""
    labels, sim = similarity_matrix(clusters, voices)
    naming = Naming(found={v.name: None for v in voices}, threshold=threshold)
    if not labels or not voices:
        return naming
    for i, label in enumerate(labels):
        naming.similarity[label] = float(sim[i].max())
    taken_c, taken_v = set(), set()
    for flat in np.argsort(-sim, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(voices))
        if sim[i, j] < threshold:
            break
        if i in taken_c or j in taken_v:
            continue
        taken_c.add(i)
        taken_v.add(j)
        naming.names[labels[i]] = voices[j].name
        naming.similarity[labels[i]] = float(sim[i, j])
        naming.found[voices[j].name] = labels[i]
    return naming


def apply_names(segments: list[dict], naming: Naming, voices: list[Voice],
                segment_vectors: list[np.ndarray | None] | None = None) -> list[dict]:
    """Segments (and their words) with the voices' names in place of the clusters they matched, and each segment's
    ``speaker_similarity``: its own embedding (``segment_vectors``, one per segment, None where too short to
    embed) against its voice (the closest voice where it stayed anonymous); where it has none, its cluster's."""
    by_name = {v.name: v for v in voices}
    mat = np.stack([v.vector for v in voices]) if voices else None
    out = []
    for i, seg in enumerate(segments):
        label: Any = seg.get("speaker")   # a diarizer's label; None (looked up all the same) where it gave none
        seg = dict(seg)
        name = naming.names.get(label)
        if name is not None:
            seg["speaker"] = name
        score: float | None
        vec = segment_vectors[i] if segment_vectors is not None and i < len(segment_vectors) else None
        if vec is not None and mat is not None:
            vec = _unit(vec)
            score = float(vec @ by_name[name].vector) if name is not None else float((mat @ vec).max())
        else:
            score = naming.similarity.get(label)
        seg["speaker_similarity"] = None if score is None else round(score, 3)
        if seg.get("words"):
            seg["words"] = [{**w, "speaker": naming.names.get(w.get("speaker"), w.get("speaker"))}
                            for w in seg["words"]]
        out.append(seg)
    return out


def mean_vector(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """The unit mean of several embeddings, each weighted (by its seconds of speech)."""
    total = sum(w for _, w in parts)
    acc = sum(_unit(v) * (w / total) for v, w in parts)
    return _unit(acc)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / (float(np.linalg.norm(v)) + 1e-9)
