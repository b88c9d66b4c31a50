"""The WhisperX server end to end over HTTP on 127.0.0.1 (tiny.en, espeak-ng speech, offline diarization)."""
import re

import pytest
import requests
from support.transcript_wer import wer


pytestmark = pytest.mark.slow


def test_health_and_docs(server):
    h = server.wait_ready()
    assert h["status"] == "ok" and h["diarization_backend"] == "offline" and h["compute_type"] == "int8"
    assert requests.get(server.url + "/docs", timeout=5).status_code == 200
    spec = requests.get(server.url + "/openapi.json", timeout=5).json()
    assert "/transcribe" in spec["paths"] and "/v1/audio/transcriptions" in spec["paths"]
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert "_model_loads_total" in metrics and "_requests_total" in metrics


def test_transcribe_runbook_contract_and_wer(server, speech_wav, speech_text):
    r = server.post("/transcribe", speech_wav)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["language"] == "en"
    assert body["segments"] and all({"start", "end", "text", "words"} <= set(s) for s in body["segments"])
    text = " ".join(s["text"] for s in body["segments"])
    assert wer(speech_text, text) < 0.35, text
    # no alignment model can be had here: Whisper's own word timestamps stand in, and the answer says so
    assert body["alignment"]["status"] == "unavailable" and body["alignment"]["words"] == "whisper"
    assert "Whisper's own word timestamps" in body["alignment"]["reason"]
    words = [w for s in body["segments"] for w in s["words"]]
    assert len(words) >= 15 and all(s["start"] - 0.01 <= w["start"] <= w["end"] <= s["end"] + 0.01
                                    for s in body["segments"] for w in s["words"])
    assert r.headers["X-Alignment"] == "unavailable"
    assert "speaker" not in body["segments"][0]
    # where the time went, and the process's start phase by phase (seconds since it started, in order)
    m = requests.get(server.url + "/metrics", timeout=5).text
    for phase in ("vad", "asr", "words"):
        assert f'stt_pipeline_seconds_total{{phase="{phase}"}}' in m, phase
    start = {k: float(v) for k, v in re.findall(r'^stt_startup_seconds\{phase="(\w+)"\} (\S+)$', m, re.M)}
    assert 0 < start["import"] <= start["asr_model"] <= start["first_inference"], start


def test_openai_formats(server, speech_wav, speech_text):
    r = server.post("/v1/audio/transcriptions", speech_wav, model="whisper-1")
    assert r.status_code == 200 and wer(speech_text, r.json()["text"]) < 0.35
    r = server.post("/v1/audio/transcriptions", speech_wav, response_format="verbose_json")
    v = r.json()
    assert v["language"] == "en" and v["segments"][0]["id"] == 0 and v["duration"] > 5
    r = server.post("/v1/audio/transcriptions", speech_wav, response_format="srt")
    assert r.status_code == 200 and "-->" in r.text
    r = server.post("/v1/audio/transcriptions", speech_wav, response_format="vtt")
    assert r.text.startswith("WEBVTT")


def _speakers_in_text(text: str) -> set:
    return set(re.findall(r"\[(SPEAKER_\d+)\]", text))


def test_diarized_outputs_in_every_format(server, conversation):
    wav = conversation.wav_path
    r = server.post("/transcribe", wav, diarize="true", num_speakers=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["diarization"]["backend"] == "offline" and len(body["diarization"]["speakers"]) == 2
    speakers = {s["speaker"] for s in body["segments"]}
    assert len(speakers) == 2 and all(sp and sp.startswith("SPEAKER_") for sp in speakers)
    # the synthetic turns alternate speakers: the transcript's segments follow them
    ref_order = [t[2] for t in conversation.turns]
    ref_changes = sum(a != b for a, b in zip(ref_order, ref_order[1:]))
    got_order = [s["speaker"] for s in body["segments"]]
    assert sum(a != b for a, b in zip(got_order, got_order[1:])) >= ref_changes - 2
    for fmt in ("srt", "vtt", "text"):
        r = server.post("/transcribe", wav, diarize="true", num_speakers=2, response_format=fmt)
        assert r.status_code == 200
        assert _speakers_in_text(r.text) == speakers, (fmt, r.text[:300])
    r = server.post("/v1/audio/transcriptions", wav, response_format="diarized_json", num_speakers=2)
    d = r.json()
    assert {s["speaker"] for s in d["segments"]} == speakers
    assert all(s["type"] == "transcript.text.segment" and {"id", "start", "end", "text"} <= set(s)
               for s in d["segments"])
    r = server.post("/v1/audio/transcriptions", wav, response_format="verbose_json", diarize="true", num_speakers=2)
    assert {s.get("speaker") for s in r.json()["segments"]} == speakers


def test_speaker_hints_change_the_result(server, conversation):
    wav = conversation.wav_path
    counts = {}
    for hints in ({"num_speakers": 1}, {"num_speakers": 3}, {"min_speakers": 3, "max_speakers": 4}):
        r = server.post("/transcribe", wav, diarize="true", **hints)
        assert r.status_code == 200, r.text
        counts[tuple(sorted(hints.items()))] = len(r.json()["diarization"]["speakers"])
    assert counts[(("num_speakers", 1),)] == 1
    assert counts[(("num_speakers", 3),)] == 3
    assert 3 <= counts[(("max_speakers", 4), ("min_speakers", 3))] <= 4
    # num_speakers=2 gives 2 (test_diarized_outputs_in_every_format)


def test_error_paths_for_real(server, speech_wav, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    r = server.post("/transcribe", bad)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_audio"
    r = server.post("/transcribe", speech_wav, model="gpt-5-ultra")
    e = r.json()["error"]
    assert r.status_code == 404 and e["code"] == "model_not_found" and "downloads of other models are off" in e["message"]
    # a hub id: downloads are an operator opt-in (test_whisperx_hardening.py has it on)
    r = server.post("/transcribe", speech_wav, model="Systran/faster-whisper-does-not-exist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "Traceback" not in r.text
    r = server.post("/transcribe", speech_wav, language="fr")
    assert r.status_code == 400 and "English-only" in r.json()["error"]["message"]
    r = server.post("/transcribe", speech_wav, diarize="maybe")
    assert r.status_code == 400 and r.json()["error"]["param"] == "diarize"
    r = server.post("/transcribe", speech_wav, diarize="true", min_speakers=3, max_speakers=2)
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_speakers"
    r = server.post("/transcribe", speech_wav, response_format="verbose_json")
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    # the server is still healthy
    assert server.wait_ready()["status"] == "ok"


def test_missing_token_with_pyannote_backend_and_api_keys(start_server, speech_wav):
    srv = start_server("pyannote-no-token", STT_DIARIZATION_BACKEND="pyannote", STT_API_KEYS="key-one,key-two")
    auth = {"Authorization": "Bearer key-two"}
    try:
        # optional API keys (stt_common): refused without, /health stays public
        r = srv.post("/transcribe", speech_wav, diarize="true")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = srv.post("/transcribe", speech_wav, diarize="true", headers=auth)
        e = r.json()["error"]
        assert r.status_code == 503 and e["code"] == "hf_token_missing"
        assert "HF_TOKEN" in e["message"] and "https://huggingface.co/pyannote/speaker-diarization-community-1" in e["message"]
        assert "Traceback" not in r.text
        r = srv.post("/v1/audio/transcriptions", speech_wav, response_format="diarized_json", headers=auth)
        assert r.status_code == 503 and r.json()["error"]["code"] == "hf_token_missing"
        r = srv.post("/transcribe", speech_wav, headers=auth)  # without diarization it still transcribes
        assert r.status_code == 200
    finally:
        srv.stop()


def test_openai_client(server, conversation):
    openai = pytest.importorskip("openai", reason="the openai client is installed in the ML environment")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    with open(conversation.wav_path, "rb") as f:
        d = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="diarized_json",
                                               extra_body={"num_speakers": 2})
    d = d if isinstance(d, dict) else d.model_dump()
    assert len({s["speaker"] for s in d["segments"]}) == 2 and d["text"]


def test_token_set_but_hub_unreachable(start_server, speech_wav):
    """A well-formed token, and the hub out of reach (HF_HUB_OFFLINE=1): the real pyannote loading code
    raises LocalEntryNotFoundError, answered as a clear 503."""
    srv = start_server("pyannote-offline", HF_TOKEN="hf_" + "x" * 34)
    try:
        r = srv.post("/transcribe", speech_wav, diarize="true")
        e = r.json()["error"]
        assert r.status_code == 503 and e["code"] == "hf_hub_unreachable", r.text
        assert "HF_HUB_OFFLINE" in e["message"] and "Traceback" not in r.text
    finally:
        srv.stop()
