"""The whole platform on the sandbox, used the way the runbook's readers use it."""

from __future__ import annotations

import re
import subprocess
import time

import openai
import pytest
from support.transcript_wer import wer

from sandbox.client import base_url, http_client, requests_session

from .conftest import pyinfra, ssh

pytestmark = pytest.mark.sandbox
SENTENCE = "the quick brown fox jumps over the lazy dog and speech recognition works on this platform"


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    wav = folder / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), SENTENCE], check=True)
    mp3 = folder / "meeting.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(mp3)], check=True)
    return mp3


def _running(container: str) -> bool:
    out = ssh(f"docker inspect -f '{{{{.State.Running}}}}' {container}", check=False).stdout.strip()
    return out == "true"


def _started_at(container: str) -> str:
    return ssh(f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {container}").stdout.strip()


def test_runbook_openai_example(deployed, speech):
    # the runbook's example, with the sandbox's URL, key, certificate and model name
    client = openai.OpenAI(
        base_url=base_url("whisper.sandbox.test") + "/v1",
        api_key=deployed["secrets"]["WHISPER_API_KEY"],
        http_client=http_client("whisper.sandbox.test"),
    )
    with open(speech, "rb") as audio_file:
        transcript = client.audio.transcriptions.create(model="whisper-1", file=audio_file, language="en")
    print(transcript.text)
    assert wer(SENTENCE, transcript.text) <= 0.25


def test_runbook_whisperx_example(deployed, speech):
    # the runbook's requests example, with basic-auth credentials and the sandbox's URL
    s = deployed["secrets"]
    url = base_url("whisperx.sandbox.test") + "/transcribe"
    requests = requests_session("whisperx.sandbox.test")
    with open(speech, "rb") as f:
        files = {"file": f}
        data = {"model": "/models/tiny.en", "language": "en", "diarize": "true"}
        response = requests.post(url, files=files, data=data,
                                 auth=(s["WHISPER_BASIC_AUTH_USER"], s["WHISPER_BASIC_AUTH_PASSWORD"]))
    assert response.status_code == 200, response.text[:1000]
    result = response.json()
    for segment in result["segments"]:
        print(f"[{segment['speaker']}] {segment['text']}")
    # tiny.en on synthetic mp3 speech, cut into speaker turns: the words must be there, roughly
    assert wer(SENTENCE, " ".join(seg["text"] for seg in result["segments"])) <= 0.5
    assert all(seg["speaker"].startswith("SPEAKER_") for seg in result["segments"])


def test_enrolled_voice_through_nginx(deployed, speech):
    """A voice enrolled through nginx with the API key lands in the host's speakers folder (the services' user,
    0700/0600: embeddings only), names the segments of a recording in that voice, and leaves the host when deleted."""
    key = deployed["secrets"]["WHISPER_API_KEY"]
    url, http = base_url("whisperx.sandbox.test"), requests_session("whisperx.sandbox.test")
    auth = {"Authorization": f"Bearer {key}"}
    with open(speech, "rb") as f:
        r = http.post(url + "/v1/speakers", files={"file": ("narrator.mp3", f)}, data={"name": "Narrator"},
                      headers=auth, timeout=300)
    assert r.status_code == 201, r.text[:1000]
    folder = "/var/lib/whisper-platform/speakers/whisperx"
    assert ssh(f"stat -c '%a %U' {folder}").stdout.split() == ["700", "whisper-app"]
    assert ssh(f"stat -c '%a %U' {folder}/*.json").stdout.split() == ["600", "whisper-app"]
    assert "Narrator" in ssh(f"cat {folder}/*.json").stdout
    with open(speech, "rb") as f:
        r = http.post(url + "/transcribe", files={"file": f}, headers=auth, timeout=600,
                      data={"model": "/models/tiny.en", "language": "en", "speakers": "Narrator"})
    assert r.status_code == 200, r.text[:1000]
    assert {seg["speaker"] for seg in r.json()["segments"]} == {"Narrator"}
    r = http.delete(url + "/v1/speakers/Narrator", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert "Narrator" not in ssh(f"cat {folder}/*.json 2>/dev/null", check=False).stdout


def test_cold_start_idle_stop_warm(deployed, speech):
    key = deployed["secrets"]["WHISPER_API_KEY"]
    pyinfra("-y", "--data", "autostart_idle_timeout=15")
    try:
        with http_client("whisper.sandbox.test") as http:
            health = base_url("whisper.sandbox.test") + "/health"
            auth = {"Authorization": f"Bearer {key}"}
            # wait for the idle stop of whatever ran before
            deadline = time.monotonic() + 120
            while _running("faster-whisper") and time.monotonic() < deadline:
                time.sleep(2)
            assert not _running("faster-whisper"), "idle stop did not happen"
            started = time.monotonic()
            assert http.get(health, headers=auth).status_code == 200
            cold = time.monotonic() - started
            assert _running("faster-whisper")
            started = time.monotonic()
            assert http.get(health, headers=auth).status_code == 200
            warm = time.monotonic() - started
            print(f"cold start {cold:.2f} s, warm {warm:.3f} s")
            assert warm < cold
            deadline = time.monotonic() + 120
            while _running("faster-whisper") and time.monotonic() < deadline:
                time.sleep(2)
            assert not _running("faster-whisper"), "idle stop did not happen"
            assert http.get(health, headers=auth).status_code == 200  # and back again
    finally:
        pyinfra("-y")


def test_template_change_restarts_only_the_affected_service(deployed, tmp_path):
    key = deployed["secrets"]["WHISPER_API_KEY"]
    for vhost in ("whisper.sandbox.test", "whisperx.sandbox.test"):
        with http_client(vhost) as http:
            assert http.get(base_url(vhost) + "/health", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    before = {c: _started_at(c) for c in ("faster-whisper", "whisperx")}
    change = ["--data", 'service_overrides_extra={"faster": {"max_queue": 3}}']
    dry = pyinfra("--dry", "--diff", *change)
    assert "Will modify /opt/whisper-faster/docker-compose.yml" in dry.output
    assert re.search(r'\+\s+STT_MAX_QUEUE: "3"', dry.output), dry.output[-3000:]
    assert "/opt/whisperx/docker-compose.yml" not in dry.output
    try:
        pyinfra("-y", *change)
        assert "STT_MAX_QUEUE=3" in ssh("docker exec faster-whisper env").stdout
        assert _started_at("faster-whisper") != before["faster-whisper"]
        assert _started_at("whisperx") == before["whisperx"]
        assert pyinfra("-y", "--json", *change).changed() == 0
    finally:
        pyinfra("-y")


@pytest.fixture(scope="module")
def french(tmp_path_factory):
    """The runbook's users speak French: neural French speech (tests/support/neural_speech.py) as mp3, like meeting.mp3."""
    neural_speech = pytest.importorskip("support.neural_speech")
    folder = tmp_path_factory.mktemp("french")
    try:
        meeting = neural_speech.speak(neural_speech.FRENCH["meeting"], "jf_nezumi")
        dialogue = neural_speech.conversation(neural_speech.FRENCH_DIALOGUE)
    except neural_speech.SpeechUnavailable as e:
        pytest.skip(str(e))
    out = {"meeting_text": neural_speech.FRENCH["meeting"], "dialogue_text": dialogue.text}
    for name, wav in (("meeting", meeting), ("dialogue", dialogue.wav)):
        out[name] = folder / f"{name}.mp3"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(out[name])], check=True)
    return out


def test_runbook_openai_example_in_french(deployed, french):
    # the runbook's example as written (language="fr"), with the multilingual model the sandbox serves beside tiny.en
    client = openai.OpenAI(
        base_url=base_url("whisper.sandbox.test") + "/v1",
        api_key=deployed["secrets"]["WHISPER_API_KEY"],
        http_client=http_client("whisper.sandbox.test"),
    )
    with open(french["meeting"], "rb") as audio_file:
        transcript = client.audio.transcriptions.create(model="base", file=audio_file, language="fr")
    print(transcript.text)
    assert wer(french["meeting_text"], transcript.text, "fr") <= 0.15
    with open(french["meeting"], "rb") as audio_file:  # no language: detected, and said
        detected = client.audio.transcriptions.create(model="base", file=audio_file, response_format="verbose_json")
    assert detected.language == "french"


def test_runbook_whisperx_example_in_french(deployed, french):
    # the runbook's requests example as written: model "base" (the sandbox's default, as production's), French,
    # diarized, on two voices
    s = deployed["secrets"]
    url = base_url("whisperx.sandbox.test") + "/transcribe"
    requests = requests_session("whisperx.sandbox.test")
    with open(french["dialogue"], "rb") as f:
        files = {"file": f}
        data = {"model": "base", "language": "fr", "diarize": "true"}
        response = requests.post(url, files=files, data=data,
                                 auth=(s["WHISPER_BASIC_AUTH_USER"], s["WHISPER_BASIC_AUTH_PASSWORD"]))
    assert response.status_code == 200, response.text[:1000]
    result = response.json()
    for segment in result["segments"]:
        print(f"[{segment['speaker']}] {segment['text']}")
    assert result["language"] == "fr" and len({seg["speaker"] for seg in result["segments"]}) == 2
    assert wer(french["dialogue_text"], " ".join(seg["text"] for seg in result["segments"]), "fr") <= 0.55


def test_upload_folder_stays_writable_after_an_idle_stop(deployed):
    # the autostart proxy stops an idle service and starts the same container again: its upload tmpfs must come
    # back writable for the service's user (Docker gives a restarted tmpfs the mode of the folder underneath)
    for project, container in (("/opt/whisper-faster", "faster-whisper"), ("/opt/whisperx", "whisperx")):
        compose = "docker compose" if ssh("docker compose version", check=False).returncode == 0 else "docker-compose"
        ssh(f"cd {project} && {compose} up -d >/dev/null 2>&1 && {compose} stop >/dev/null 2>&1 "
            f"&& {compose} start >/dev/null 2>&1")
        assert ssh(f"docker exec {container} stat -c '%a' /tmp/stt").stdout.strip() == "1777"
        assert ssh(f"docker exec {container} sh -c 'touch /tmp/stt/probe && rm /tmp/stt/probe'",
                   check=False).returncode == 0
