"""images/whisperx routes' helpers: form parsing and the writers with speaker labels (no model needed)."""
import json

import pytest

pytest.importorskip("fastapi", reason="fastapi is needed by the server")
pytest.importorskip("stt_common", reason="stt_common (images/common) is needed by the server")

from stt_common import APIError  # noqa: E402

from whisperx_server.forms import form_bool, form_int  # noqa: E402
from whisperx_server.responses import openai_response, transcribe_response  # noqa: E402
from whisperx_server.settings import Settings, engine_config  # noqa: E402

RESULT = {
    "segments": [
        {"start": 0.5, "end": 2.0, "text": "Hello there.", "speaker": "SPEAKER_00",
         "words": [{"word": "Hello", "start": 0.5, "end": 0.9, "score": 0.8, "speaker": "SPEAKER_00"},
                   {"word": "there.", "start": 1.0, "end": 2.0, "score": 0.7, "speaker": "SPEAKER_00"}]},
        {"start": 2.5, "end": 4.0, "text": "Hi, how are you?", "speaker": "SPEAKER_01", "words": []},
    ],
    "language": "en", "duration": 4.2,
    "alignment": {"status": "unavailable", "language": "en", "reason": "no model"},
    "diarization": {"backend": "offline", "speakers": ["SPEAKER_00", "SPEAKER_01"], "seconds": 1.0},
}


class Form:
    def __init__(self, fmt, words=False):
        self.response_format = fmt
        self.word_timestamps = words
        self.segment_timestamps = True


def test_form_values():
    f = {"diarize": ["true"], "align": ["0"], "num_speakers": ["2"], "bad": ["x"], "empty": [""]}
    assert form_bool(f, "diarize", False) is True and form_bool(f, "align", True) is False
    assert form_bool(f, "missing", True) is True and form_bool(f, "empty", False) is False
    assert form_int(f, "num_speakers") == 2 and form_int(f, "missing") is None
    with pytest.raises(APIError) as e:
        form_bool(f, "bad", False)
    assert e.value.status == 400 and e.value.param == "bad"
    with pytest.raises(APIError):
        form_int(f, "bad")


def test_transcribe_json_is_the_runbook_shape():
    r = transcribe_response(RESULT, "json")
    body = json.loads(r.body)
    assert body["language"] == "en" and body["segments"][0]["speaker"] == "SPEAKER_00"
    assert set(body["segments"][0]["words"][0]) == {"word", "start", "end", "score", "speaker"}
    assert body["alignment"]["status"] == "unavailable"
    assert r.headers["X-Alignment"] == "unavailable" and r.headers["X-Diarization-Backend"] == "offline"


@pytest.mark.parametrize("fmt", ["srt", "vtt", "text"])
def test_speaker_prefixes(fmt):
    text = transcribe_response(RESULT, fmt).body.decode()
    assert "[SPEAKER_00] Hello there." in text and "[SPEAKER_01] Hi, how are you?" in text
    if fmt == "srt":
        assert "00:00:00,500 --> 00:00:02,000" in text
    if fmt == "vtt":
        assert text.startswith("WEBVTT")


def test_openai_diarized_json_and_verbose_words():
    d = json.loads(openai_response(RESULT, Form("diarized_json")).body)
    assert [(s["type"], s["speaker"]) for s in d["segments"]] == [
        ("transcript.text.segment", "SPEAKER_00"), ("transcript.text.segment", "SPEAKER_01")]
    assert d["text"] == "Hello there. Hi, how are you?"
    v = json.loads(openai_response(RESULT, Form("verbose_json", words=True)).body)
    assert [w["word"] for w in v["words"]] == ["Hello", "there."]
    assert v["segments"][1]["speaker"] == "SPEAKER_01" and v["alignment"]["status"] == "unavailable"
    assert json.loads(openai_response(RESULT, Form("json")).body)["text"] == "Hello there. Hi, how are you?"


def test_settings_to_engine_config(monkeypatch):
    for k, v in {"STT_MODEL": "tiny", "STT_BATCH_SIZE": "4", "STT_ALIGN_MODELS": "en=/m/en",
                 "STT_DIARIZATION_BACKEND": "offline", "HF_TOKEN": "hf_abc"}.items():
        monkeypatch.setenv(k, v)
    cfg = engine_config(Settings())
    assert (cfg.default_model, cfg.batch_size, cfg.align_models, cfg.diarization_backend, cfg.hf_token,
            cfg.compute_type) == ("tiny", 4, {"en": "/m/en"}, "offline", "hf_abc", "int8")
    for k, v in {"STT_DEVICE": "cuda", "STT_CPU_THREADS": "3", "HF_TOKEN": " hf_x ", "STT_DIARIZATION_BACKEND": "Offline",
                 "STT_ALIGN_MODELS": "en=/a, fr=org/m", "STT_MAX_LOADED_MODELS": "2", "STT_MODEL_TTL": "30"}.items():
        monkeypatch.setenv(k, v)
    cfg = engine_config(Settings())
    assert (cfg.device, cfg.compute_type, cfg.cpu_threads, cfg.hf_token, cfg.diarization_backend) == \
        ("cuda", "float16", 3, "hf_x", "offline")
    assert cfg.align_models == {"en": "/a", "fr": "org/m"}
    assert (cfg.max_loaded_models, cfg.model_ttl) == (2, 30)
    monkeypatch.setenv("STT_DIARIZATION_BACKEND", "magic")
    with pytest.raises(ValueError):
        engine_config(Settings())
