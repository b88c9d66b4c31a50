"""The diarizer's quality targets on a small fixed set of synthetic conversations (espeak-ng, fixed seeds).

DER <= 10 % (pyannote.metrics, collar 0.25 s) on 2 and 3 speakers; speaker count right in >= 90 %
of the conversations. Speed and memory are measured by bench/diarization.py, not asserted here.
"""
import pytest

pytest.importorskip("torch", reason="offline diarization needs torch: run with .venv-ml/bin/python")
pytest.importorskip("silero_vad", reason="silero-vad is missing (make venv-ml installs it)")
pytest.importorskip("resemblyzer", reason="resemblyzer is missing (make venv-ml installs it)")
pytest.importorskip("pyannote.metrics", reason="pyannote.metrics is needed to score diarization")


def _der(results, n):
    comps = [c for conv, _, c in results if conv.n_speakers == n]
    err = sum(c["missed detection"] + c["false alarm"] + c["confusion"] for c in comps)
    return err / sum(c["total"] for c in comps)


@pytest.mark.parametrize("n", [2, 3])
def test_der_within_target(eval_results, n):
    der = _der(eval_results, n)
    assert der <= 0.10, f"DER {der:.1%} on {n} speakers"


def test_speaker_count_right_in_90_percent(eval_results):
    found = [(conv.uri, conv.n_speakers, df.speaker.nunique()) for conv, df, _ in eval_results]
    right = sum(n == k for _, n, k in found)
    assert right / len(found) >= 0.9, [f for f in found if f[1] != f[2]]


def test_four_speakers_scored(eval_results):
    """4 speakers have no DER target; keep them from silently falling apart."""
    assert _der(eval_results, 4) <= 0.20
