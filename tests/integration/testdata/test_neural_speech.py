"""tests/support/neural_speech.py: French phonemes with their punctuation, speech rendered once and cached."""
import wave

import pytest

neural_speech = pytest.importorskip("support.neural_speech")


def test_phonemes_keep_punctuation():
    try:
        ipa = neural_speech.phonemes("Bonjour, le monde. Ça va?")
    except neural_speech.SpeechUnavailable as e:
        pytest.skip(str(e))
    assert ipa.startswith("bɔ̃ʒ") and "," in ipa and ipa.endswith("?") and "-" not in ipa


def test_speak_renders_once(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_SPEECH_CACHE", str(tmp_path))
    try:
        wav = neural_speech.speak("Bonjour le monde.", "jf_nezumi")
    except neural_speech.SpeechUnavailable as e:
        pytest.skip(str(e))
    assert wav.parent == tmp_path
    with wave.open(str(wav)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and 0.5 < w.getnframes() / 16000 < 4
    mtime = wav.stat().st_mtime_ns
    assert neural_speech.speak("Bonjour le monde.", "jf_nezumi") == wav and wav.stat().st_mtime_ns == mtime
    assert neural_speech.speak("Bonjour le monde.", "jm_kumo") != wav


def test_conversation_turns(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_SPEECH_CACHE", str(tmp_path))
    try:
        conv = neural_speech.conversation([("jf_nezumi", "Bonjour."), ("jm_kumo", "Salut.")], pause=0.5)
    except neural_speech.SpeechUnavailable as e:
        pytest.skip(str(e))
    (s1, e1, v1, _), (s2, e2, v2, _) = conv.turns
    assert s1 == 0 and abs(s2 - e1 - 0.5) < 0.01 and (v1, v2) == ("jf_nezumi", "jm_kumo")
    with wave.open(str(conv.wav)) as w:
        assert abs(w.getnframes() / 16000 - e2) < 0.01
