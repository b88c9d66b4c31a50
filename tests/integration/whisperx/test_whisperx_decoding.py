"""OpenAI's `prompt` and `temperature` and the server's hallucination guards on the WhisperX server (real server
processes, the real tiny.en model, espeak-ng speech; the French prompt test is in test_whisperx_french.py).

What a user checks: a prompt that spells a name makes the name come out as spelled, on both routes, and only for
the request that sent it (the pipeline is shared: two requests at once each get their own prompt); a temperature
is accepted in [0, 1] and anything else is OpenAI's 400; the STT_* guards reach the decoder (thresholds that call
every chunk silence leave no text)."""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

NAME_TEXT = "Please send the report to Kowalczyk before lunch."
PROMPT = "Kowalczyk, Szczepanski."


@pytest.fixture(scope="module")
def name_wav(audio_dir):
    path = audio_dir / "name.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), NAME_TEXT], check=True)
    return path


@pytest.fixture(scope="module")
def srv(start_server):
    # two requests run at once on the one loaded pipeline (the race the per-request options must not have)
    return start_server("decoding", STT_MAX_CONCURRENCY="2")


def text_of(r) -> str:
    assert r.status_code == 200, r.text
    return r.text if r.headers["content-type"].startswith("text/plain") else r.json()["text"]


def test_prompt_spells_a_name_on_both_routes(srv, name_wav):
    plain = text_of(srv.post("/v1/audio/transcriptions", name_wav))
    assert "Kowalczyk" not in plain, plain   # tiny.en alone cannot spell it ("Cal Polyic")
    prompted = text_of(srv.post("/v1/audio/transcriptions", name_wav, prompt=PROMPT))
    assert "Kowalczyk" in prompted, prompted
    runbook = srv.post("/transcribe", name_wav, prompt=PROMPT, response_format="text")
    assert "Kowalczyk" in text_of(runbook), runbook.text
    # the prompt was this request's only: the next one without it gets the server's defaults back
    assert text_of(srv.post("/v1/audio/transcriptions", name_wav)) == plain


def test_concurrent_requests_keep_their_own_prompt(srv, name_wav):
    alone = {p: text_of(srv.post("/v1/audio/transcriptions", name_wav, prompt=p)) for p in (None, PROMPT)}
    asks = [None, PROMPT] * 3
    with ThreadPoolExecutor(len(asks)) as pool:
        got = list(pool.map(lambda p: text_of(srv.post("/v1/audio/transcriptions", name_wav, prompt=p)), asks))
    assert got == [alone[p] for p in asks]


def test_temperature_accepted_and_validated(srv, name_wav):
    for route in ("/v1/audio/transcriptions", "/transcribe"):
        r = srv.post(route, name_wav, temperature="0.5", response_format="text")
        assert r.status_code == 200 and "report" in r.text.lower(), r.text   # sampled, still the sentence
        for bad in ("1.5", "-0.1", "hot"):
            r = srv.post(route, name_wav, temperature=bad)
            assert r.status_code == 400, (route, bad, r.text)
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert (err["param"], err["code"], err["type"]) == ("temperature", "invalid_value",
                                                                 "invalid_request_error"), err


def test_both_fields_documented_on_both_routes(srv):
    paths = requests.get(srv.url + "/openapi.json", timeout=10).json()["paths"]
    for route in ("/transcribe", "/v1/audio/transcriptions", "/v1/jobs"):
        props = paths[route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert props["prompt"]["type"] == "string" and props["prompt"]["description"], route
        assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 1), route


def test_guard_settings_reach_the_decoder(start_server, name_wav, srv):
    # every chunk "silent" (no-speech probability above 0 with a log-probability below 0): nothing is said
    silent = start_server("guards", STT_NO_SPEECH_THRESHOLD="0", STT_LOG_PROB_THRESHOLD="0",
                          STT_CONDITION_ON_PREVIOUS_TEXT="false")
    r = silent.post("/v1/audio/transcriptions", name_wav, response_format="verbose_json")
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "" and r.json()["segments"] == [], r.text
    # the same audio on the default guards is transcribed (the check above is the settings, not the audio)
    assert "report" in text_of(srv.post("/v1/audio/transcriptions", name_wav)).lower()
