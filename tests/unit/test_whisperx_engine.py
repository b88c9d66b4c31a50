"""images/whisperx engine pieces that need no model: model names, windows, hints, the one model cache."""
import time

import pytest

np = pytest.importorskip("numpy", reason="numpy is needed by the engine")
pytest.importorskip("stt_common.errors", reason="stt_common (images/common) is needed for the error shape")

from whisperx_server.engine import (SAMPLE_RATE, EngineConfig, WhisperXEngine,  # noqa: E402
                                    check_speaker_hints, quiet_cut_points)
from whisperx_server.segments import public_segment  # noqa: E402
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


def test_one_cache_for_asr_alignment_and_diarization(tmp_path):
    """The engine's helper models live in the same stt_common cache as its ASR models: one list, one TTL."""
    loads = []
    e = engine(tmp_path, model_ttl=10)
    e._load_asr = lambda key: loads.append(key) or f"ASR:{key}"
    e.cache.loader = e._load_asr
    assert e.load_asr(None) == "ASR:base" and e.load_asr("base") == "ASR:base"
    assert e.cache.load("align:en:default", lambda: loads.append("align") or "ALIGN", kind="align") == "ALIGN"
    assert e.cache.load("align:en:default", lambda: loads.append("again") or "X", kind="align") == "ALIGN"
    assert loads == ["base", "align"]
    assert e.cache.loaded() == ["base", "align:en:default"]
    assert e.cache.reap(now=time.monotonic() + 5) == []
    assert e.cache.reap(now=time.monotonic() + 11) == ["align:en:default"]   # the default ASR model stays
    assert e.cache.loaded() == ["base"]


def test_public_segment_cleans_numbers():
    s = {"start": np.float64(1.23456), "end": float("nan"), "text": " hi there", "speaker": "SPEAKER_01",
         "words": [{"word": "hi", "start": 1.2, "end": 1.4, "score": np.float32(0.5)}, {"word": "there"}]}
    out = public_segment(s, diarized=True)
    assert out == {"start": 1.235, "end": None, "text": "hi there", "speaker": "SPEAKER_01",
                   "words": [{"word": "hi", "start": 1.2, "end": 1.4, "score": 0.5, "speaker": "SPEAKER_01"},
                             {"word": "there", "start": None, "end": None, "score": None, "speaker": "SPEAKER_01"}]}
    assert "speaker" not in public_segment(s, diarized=False)


def test_worker_warm_up_yields_the_cpu_to_the_api_start():
    import os
    import threading

    from whisperx_server.worker import WARM_NICENESS, yielding
    seen = {}

    def warm():
        seen["warm-up"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    yielding(warm)()
    assert seen["warm-up"] == min(19, before + WARM_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before   # jobs: the usual priority

    def broken():
        raise RuntimeError("model missing")
    with pytest.raises(RuntimeError, match="model missing"):
        yielding(broken)()
