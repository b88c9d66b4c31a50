"""The alignment code path for real, in process: whisperx.align() with a small, randomly initialised
wav2vec2 CTC model that this test builds and saves (no alignment model can be downloaded here).

It checks plumbing, not accuracy: random weights give meaningless word times. What it proves: the
model loads through STT_ALIGN_MODELS, nltk's punkt_tab comes from the shipped package instead of a
download, words come back with start/end/score inside their segment, and with diarization each word
carries a speaker.
"""
import pytest

from support.wav2vec2_stub import save_random_wav2vec2

pytestmark = pytest.mark.slow

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz") + ["'"]


@pytest.fixture(scope="module")
def random_wav2vec2(tmp_path_factory):
    return save_random_wav2vec2(tmp_path_factory.mktemp("wav2vec2-random"), VOCAB)


@pytest.fixture(scope="module")
def engine(tiny_model, random_wav2vec2):
    from whisperx_server.engine import EngineConfig, WhisperXEngine
    return WhisperXEngine(EngineConfig(default_model=tiny_model, threads=2, models_dir="/nonexistent",
                                       align_models={"en": random_wav2vec2}))


@pytest.fixture
def no_nltk_download(monkeypatch, tmp_path):
    """punkt_tab must come from the shipped package: nltk.download is made to fail loudly."""
    import nltk

    from whisperx_server import punkt_data

    def refuse(*a, **k):
        raise AssertionError("nltk.download was called: alignment reached for the network")
    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setenv("STT_NLTK_DATA", str(tmp_path / "nltk_data"))
    monkeypatch.setattr(punkt_data, "_ready", None)
    saved = list(nltk.data.path)
    yield tmp_path / "nltk_data"
    nltk.data.path[:] = saved


def _audio(path):
    from stt_common.uploads import decode_audio_sync
    return decode_audio_sync(str(path))


def test_alignment_plumbing(engine, speech_wav, no_nltk_download):
    out = engine.run(_audio(speech_wav), align=True)
    assert out["alignment"]["status"] == "aligned", out["alignment"]
    assert (no_nltk_download / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()
    words = [w for s in out["segments"] for w in s["words"]]
    assert len(words) >= 10
    for s in out["segments"]:
        for w in s["words"]:
            if w["start"] is not None:
                assert s["start"] - 0.01 <= w["start"] <= w["end"] <= s["end"] + 0.01
    assert any(w["score"] is not None for w in words)


def test_alignment_with_speakers(engine, conversation, no_nltk_download):
    out = engine.run(_audio(conversation.wav_path), align=True, diarize=True, num_speakers=2)
    assert out["alignment"]["status"] == "aligned"
    words = [w for s in out["segments"] for w in s["words"]]
    assert words and all(w["speaker"] in out["diarization"]["speakers"] for w in words)
    assert len({s["speaker"] for s in out["segments"]}) == 2
    # one model cache: the ASR model, the alignment model and the diarizer, listed together
    loaded = engine.cache.loaded()
    assert engine.resolve_model(None) in loaded and "diarize:offline" in loaded
    assert any(k.startswith("align:en:") for k in loaded), loaded


def test_language_without_alignment_model(engine):
    from whisperx_server.alignment import AlignUnavailable
    with pytest.raises(AlignUnavailable, match="no wav2vec2 alignment model is known for language 'xx'"):
        engine.load_align("xx")
    # remembered: the next request does not try again
    with pytest.raises(AlignUnavailable):
        engine.load_align("xx")
