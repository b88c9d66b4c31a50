"""faster-whisper's hallucination guards: one definition (stt_common.settings.GuardSettings) for both services,
the same STT_* names, docs and "none/off disables" parsing; OpenAI's temperature as the decoder's list."""
import pytest

pytest.importorskip("pydantic_settings", reason="pydantic-settings is needed by the settings")

from faster_server.settings import FasterSettings  # noqa: E402
from stt_common.settings import GuardSettings, temperatures  # noqa: E402
from whisperx_server.forms import transcribe_openapi  # noqa: E402
from whisperx_server.settings import Settings as WhisperXSettings, engine_config  # noqa: E402

GUARDS = ("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold", "condition_on_previous_text",
          "hallucination_silence_threshold")


@pytest.mark.parametrize("cls", [FasterSettings, WhisperXSettings])
def test_both_services_read_the_same_guards(cls, monkeypatch):
    assert issubclass(cls, GuardSettings)
    assert tuple(cls().guards) == GUARDS
    for name in GUARDS:   # the same default and the same words in both services' settings
        mine, shared = cls.model_fields[name], GuardSettings.model_fields[name]
        assert (mine.default, mine.description) == (shared.default, shared.description), name
        assert len(mine.description) > 40, name
    assert cls().guards == {"compression_ratio_threshold": 2.4, "log_prob_threshold": -1.0,
                            "no_speech_threshold": 0.6, "condition_on_previous_text": True,
                            "hallucination_silence_threshold": None}
    monkeypatch.setenv("STT_COMPRESSION_RATIO_THRESHOLD", "2.0")
    monkeypatch.setenv("STT_CONDITION_ON_PREVIOUS_TEXT", "false")
    monkeypatch.setenv("STT_NO_SPEECH_THRESHOLD", "none")
    monkeypatch.setenv("STT_LOG_PROB_THRESHOLD", "OFF")
    monkeypatch.setenv("STT_HALLUCINATION_SILENCE_THRESHOLD", "")
    assert cls().guards == {"compression_ratio_threshold": 2.0, "log_prob_threshold": None,
                            "no_speech_threshold": None, "condition_on_previous_text": False,
                            "hallucination_silence_threshold": None}
    monkeypatch.setenv("STT_NO_SPEECH_THRESHOLD", "1.5")   # a probability
    with pytest.raises(ValueError):
        cls()


def test_whisperx_engine_gets_the_guards(monkeypatch):
    monkeypatch.setenv("STT_LOG_PROB_THRESHOLD", "-0.5")
    monkeypatch.setenv("STT_CONDITION_ON_PREVIOUS_TEXT", "0")
    guards = engine_config(WhisperXSettings()).guards
    assert guards["log_prob_threshold"] == -0.5 and guards["condition_on_previous_text"] is False


def test_temperature_as_the_decoders_list():
    assert temperatures(0) == temperatures(0.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]   # the guards' fallback ladder
    assert temperatures(0.5) == [0.5] and temperatures(1) == [1.0]


def test_runbook_route_documents_prompt_and_temperature():
    props = transcribe_openapi()["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "model", "language", "diarize", "prompt", "temperature"} <= set(props)
    assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 1)
    assert "timestamp_granularities[]" not in props   # verbose_json is not one of its formats


def test_whisperx_guard_checks_a_decode_as_faster_whisper_does():
    pytest.importorskip("faster_whisper", reason="faster-whisper computes the compression ratio")
    from types import SimpleNamespace

    from whisperx_server.decoding import needs_fallback
    opts = SimpleNamespace(compression_ratio_threshold=2.4, log_prob_threshold=-1.0)
    loop = "la vidéo de la vidéo de la vidéo de la vidéo de la vidéo de la vidéo de la vidéo de la vidéo"
    said = "Le rapport de Kowalczyk sur le serveur arrive jeudi."
    assert needs_fallback(loop, -0.2, opts)           # a loop: decoded again, hotter
    assert needs_fallback(said, -1.5, opts)           # unlikely: decoded again
    assert not needs_fallback(said, -0.3, opts)
    off = SimpleNamespace(compression_ratio_threshold=None, log_prob_threshold=None)   # STT_...=none
    assert not needs_fallback(loop, -5.0, off)
