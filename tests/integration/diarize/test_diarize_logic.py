"""diarize_offline's clustering and segment logic on synthetic embeddings (no models, no audio)."""
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is in .venv-ml (run with .venv-ml/bin/python)")
pytest.importorskip("pandas", reason="pandas is in .venv-ml")

from diarize_offline.core import SAMPLE_RATE, OfflineDiarizer, Params  # noqa: E402


@pytest.fixture
def d():
    obj = object.__new__(OfflineDiarizer)  # logic only: no models loaded
    obj.params = Params()
    return obj


def _blobs(rng, k, per, dim=32, spread=0.15):
    centers = rng.normal(size=(k, dim))
    x = np.concatenate([c + spread * rng.normal(size=(per, dim)) * np.linalg.norm(c) / np.sqrt(dim)
                        for c in centers])
    x -= x.mean(axis=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(k), per)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_automatic_count_and_bounds(d, k):
    rng = np.random.default_rng(k)
    x, truth = _blobs(rng, k, 12)
    dur = np.full(len(x), 2.0)
    labels = d.cluster(x, dur)
    assert labels.max() + 1 == k
    # the clusters match the truth up to renaming
    assert len({(a, b) for a, b in zip(truth, labels)}) == k
    assert d.cluster(x, dur, num_speakers=k + 1).max() + 1 == k + 1
    assert d.cluster(x, dur, max_speakers=k - 1).max() + 1 == k - 1
    assert d.cluster(x, dur, min_speakers=k + 2).max() + 1 == k + 2


def test_one_voice_is_one_speaker(d):
    """Mean-subtracted embeddings of one voice look like noise; the raw ones show it is one voice."""
    rng = np.random.default_rng(1)
    voice = rng.normal(size=32)
    raw = voice + 0.2 * rng.normal(size=(30, 32)) * np.linalg.norm(voice) / np.sqrt(32)
    x = raw - raw.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dur = np.full(30, 2.0)
    assert d.cluster(x, dur).max() + 1 > 1  # silhouette alone always splits
    assert d.cluster(x, dur, raw=raw).max() + 1 == 1
    assert d.cluster(x, dur, raw=raw, min_speakers=2).max() + 1 == 2


def test_distinct_voices_are_not_merged(d):
    rng = np.random.default_rng(2)
    raw, truth = _blobs(rng, 3, 10)
    raw = raw + 2.0  # a shared offset, as real embeddings have: raw centroids stay apart by construction below
    x = raw - raw.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = np.stack([raw[truth == i].mean(axis=0) for i in range(3)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sim = (c @ c.T)[~np.eye(3, dtype=bool)].max()
    labels = d.cluster(x, np.full(30, 2.0), raw=raw)
    assert labels.max() + 1 == (3 if sim < d.params.same_speaker_sim else labels.max() + 1)


def test_tiny_cluster_folds_into_nearest(d):
    rng = np.random.default_rng(0)
    x, truth = _blobs(rng, 3, 10)
    dur = np.where(truth == 2, 0.15, 3.0)  # third "speaker" has 1.5 s in all: below min_cluster_s
    labels = d.cluster(x, dur)
    assert labels.max() + 1 == 2


def test_chunks_split_regions_evenly(d):
    win_region = np.array([0] * 7 + [1] + [2] * 3)
    chunks = d._chunks(win_region)
    assert np.bincount(chunks).tolist() == [3, 2, 2, 1, 3]
    assert (np.diff(chunks) >= 0).all()


def test_windows_cover_regions(d):
    sr = SAMPLE_RATE
    regions = [(0, int(0.3 * sr)), (sr, int(2.0 * sr)), (3 * sr, int(6.1 * sr))]
    wins = d.windows(regions)
    by = {}
    for r, a, b in wins:
        by.setdefault(r, []).append((a, b))
        assert regions[r][0] <= a < b <= regions[r][1]
    assert by[0] == [(0, int(0.3 * sr))]  # short region: one window of its own length
    assert by[2][-1][1] == regions[2][1]  # the last window reaches the region's end


def test_segments_cut_between_windows_and_fill_short_gaps(d):
    sr = SAMPLE_RATE
    regions = [(0, 3 * sr), (int(3.1 * sr), 5 * sr), (6 * sr, 7 * sr)]
    wins = [(0, 0, int(1.5 * sr)), (0, int(0.75 * sr), int(2.25 * sr)), (0, int(1.5 * sr), 3 * sr),
            (1, int(3.1 * sr), int(4.6 * sr)), (1, int(3.5 * sr), 5 * sr), (2, 6 * sr, 7 * sr)]
    labels = np.array([0, 0, 1, 1, 1, 0])
    segs = d._to_segments(regions, wins, labels)
    # region 0 cut at the midpoint between window centres 1.5 and 2.25; the 0.1 s gap to region 1 filled
    assert segs == [(0.0, 1.875, 0), (1.875, 5.0, 1), (6.0, 7.0, 0)]


def test_annotation_and_empty_dataframe():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyannote.core", reason="pyannote.core is in .venv-ml")
    df = pd.DataFrame([(0.0, 1.0, "SPEAKER_00"), (0.5, 2.0, "SPEAKER_01")], columns=["start", "end", "speaker"])
    ann = OfflineDiarizer.annotation(df, uri="x")
    assert ann.uri == "x" and sorted(ann.labels()) == ["SPEAKER_00", "SPEAKER_01"]
    assert len(OfflineDiarizer.annotation(df.iloc[:0])) == 0


def test_silhouette_is_sklearns():
    """The clustering's own silhouette (no sklearn import at start) gives sklearn's numbers."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from scipy.spatial.distance import pdist, squareform

    from diarize_offline.core import silhouette  # noqa: E402
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(3, 40))
        k = int(rng.integers(2, min(n - 1, 6) + 1))
        labels = rng.integers(0, k, size=n)
        labels[:k] = np.arange(k)
        d = squareform(pdist(rng.normal(size=(n, 5)), "cosine"))
        assert silhouette(d, labels) == pytest.approx(
            sklearn_metrics.silhouette_score(d, labels, metric="precomputed"), abs=1e-9)
