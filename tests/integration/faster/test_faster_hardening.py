"""The faster-whisper server: hostile and unlucky requests are refused early, in OpenAI's error
shape, with bounded disk, memory, time and models. Real server processes, the real tiny.en model."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from support import hostile
from .conftest import ROOT, free_port, start_server, stop_server, tiny_model

KEY = "hardening-key"
PATH = "/v1/audio/transcriptions"


def shape(a) -> dict:
    e = a.json()["error"] if hasattr(a, "json") else a
    assert set(e) == {"message", "type", "param", "code"}, e
    return e


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster-hard"), STT_API_KEYS=KEY, STT_MAX_AUDIO_SECONDS="600",
                     STT_MAX_CONCURRENCY="1", STT_MAX_QUEUE="0", STT_REQUEST_TIMEOUT="60")
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def long_speech(speech, tmp_path_factory):
    """~3 min of speech: many segments, tens of seconds to transcribe here."""
    return hostile.repeat(speech["long"], tmp_path_factory.mktemp("long") / "three-min.wav", 3)


def metrics(srv) -> str:
    return httpx.get(srv.url + "/metrics").text


# ---------------------------------------------------------------- disk: audio length

def test_hour_of_silence_is_refused_from_its_header(srv, tmp_path):
    flac = hostile.silence_flac(tmp_path / "hour.flac", 3600)
    assert flac.stat().st_size < 2_000_000
    a = hostile.post(srv.url, PATH, hostile.multipart(file=flac.read_bytes()), key=KEY)
    assert a.status == 413 and shape(a)["code"] == "audio_too_long" and a.seconds < 5, a
    assert not list(srv.tmp_dir.iterdir())


def test_audio_without_a_length_stops_decoding_at_the_limit(srv, tmp_path):
    flac = hostile.headerless_stream(tmp_path / "piped.flac", 900)   # 15 min, limit 10 min
    proc = psutil.Process(srv.proc.pid)
    a = hostile.post(srv.url, PATH, hostile.multipart(file=flac.read_bytes()), key=KEY)
    assert a.status == 413 and shape(a)["code"] == "audio_too_long", a
    assert proc.memory_info().rss < 1024 * 1024 * 1024
    assert not list(srv.tmp_dir.iterdir())


# ---------------------------------------------------------------- memory: form floods

def test_flood_of_repeated_fields_is_refused_early(srv):
    rss0 = psutil.Process(srv.proc.pid).memory_info().rss
    body = hostile.multipart([("extra", b"x" * (1024 * 1024))] * 400, file=b"RIFF")   # 400 MB of fields
    a = hostile.post(srv.url, PATH, body, key=KEY)
    assert a.status == 413 and shape(a)["code"] == "form_too_large", a
    assert a.sent < 50 * 1024 * 1024   # answered while the client was still sending
    many = hostile.multipart([("extra", b"1")] * 400, file=b"RIFF")
    a = hostile.post(srv.url, PATH, many, key=KEY)
    assert a.status == 400 and shape(a)["code"] == "too_many_fields", a
    assert psutil.Process(srv.proc.pid).memory_info().rss - rss0 < 64 * 1024 * 1024


# ---------------------------------------------------------------- queue before the body

def test_full_queue_answers_before_the_body_is_read(srv, long_speech):
    import threading
    body = hostile.multipart(file=long_speech.read_bytes())
    t = threading.Thread(target=hostile.post, args=(srv.url, PATH, body), kwargs={"key": KEY})
    t.start()
    try:
        deadline = time.monotonic() + 20
        while hostile.metric(metrics(srv), "stt_inference_in_progress") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # declare 100 MB, send 64 KB: the answer comes without the rest
        big = hostile.multipart(file=b"\0" * 65536)
        a = hostile.post(srv.url, PATH, big, key=KEY, length=100 * 1024 * 1024, send_limit=len(big), timeout=10)
        assert a.status == 503 and shape(a)["code"] == "queue_full" and "retry-after" in a.headers, a
        assert not list(srv.tmp_dir.iterdir())
    finally:
        t.join(120)


# ---------------------------------------------------------------- time: hang-ups and the job limit

def test_client_hang_up_stops_the_job(srv, long_speech):
    before = hostile.metric(metrics(srv), "stt_jobs_stopped_total", 'reason="disconnected"')
    hostile.hang_up_after(srv.url, PATH, hostile.multipart(file=long_speech.read_bytes()), 2.0, key=KEY)
    assert hostile.wait_idle(srv.url, 10) < 10
    assert hostile.metric(metrics(srv), "stt_jobs_stopped_total", 'reason="disconnected"') == before + 1


def test_client_hang_up_mid_stream_stops_the_decode(srv, long_speech):
    before = hostile.metric(metrics(srv), "stt_jobs_stopped_total", 'reason="disconnected"')
    got = hostile.hang_up_mid_stream(srv.url, PATH, hostile.multipart([("stream", b"true")],
                                                                      file=long_speech.read_bytes()), key=KEY)
    assert hostile.sse_events(got.partition(b"\r\n\r\n")[2])[0]["type"] == "transcript.text.delta", got[:300]
    assert hostile.wait_idle(srv.url, 10) < 10   # stopped at its next segment, not at the end of 3 min
    assert hostile.metric(metrics(srv), "stt_jobs_stopped_total", 'reason="disconnected"') == before + 1


def test_job_time_limit_answers_a_clear_error(tmp_path, long_speech):
    s = start_server(tmp_path, STT_ALLOW_OPEN_ACCESS="1", STT_REQUEST_TIMEOUT="3")
    try:
        a = hostile.post(s.url, PATH, hostile.multipart(file=long_speech.read_bytes()))
        e = shape(a)
        assert a.status == 503 and e["code"] == "job_timeout" and "3 s" in e["message"], a
        assert a.seconds < 15
        assert hostile.wait_idle(s.url, 10) < 10   # the slot is free again

        # a stream has sent its 200 already: the same limit ends it with an error event in OpenAI's shape
        a = hostile.post(s.url, PATH, hostile.multipart([("stream", b"true")], file=long_speech.read_bytes()))
        events = hostile.sse_events(a.body)
        assert a.status == 200 and events and events[-1]["type"] == "error", a
        e = shape(events[-1]["error"])
        assert e["code"] == "job_timeout" and "3 s" in e["message"], events[-1]
        assert not any(ev["type"] == "transcript.text.done" for ev in events)
        assert a.seconds < 15
        assert hostile.wait_idle(s.url, 10) < 10
        assert hostile.metric(httpx.get(s.url + "/metrics").text, "stt_jobs_stopped_total", 'reason="timeout"') == 2
    finally:
        stop_server(s)


# ---------------------------------------------------------------- input validation

@pytest.mark.parametrize("field", ["model", "prompt", "language", "response_format", "extra"])
def test_control_characters_in_fields_are_400(srv, speech, field):
    a = hostile.post(srv.url, PATH, hostile.multipart([(field, b"x\x00y")], file=speech["wav"].read_bytes()), key=KEY)
    assert a.status == 400 and shape(a)["param"] == field, a


def test_control_characters_in_model_path_are_400(srv):
    r = httpx.get(srv.url + "/v1/models/x%00y", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and shape(r.json()["error"])["param"] == "model"


@pytest.mark.parametrize("language,hint", [("fr", "English-only"), ("english", "English-only"),
                                           ("xx", "English-only")])
def test_english_only_model_refuses_other_languages(srv, speech, language, hint):
    a = hostile.post(srv.url, PATH, hostile.multipart([("language", language.encode())],
                                                      file=speech["wav"].read_bytes()), key=KEY)
    e = shape(a)
    assert a.status == 400 and e["param"] == "language" and hint in e["message"] and "'en'" in e["message"], a
    assert a.seconds < 3


def test_model_names_never_probe_the_host(srv, speech):
    for name in ("etc/ssl", "/etc/ssl", "../../etc", "tiny", "Systran/faster-whisper-large-v3"):
        a = hostile.post(srv.url, PATH, hostile.multipart([("model", name.encode())], file=speech["wav"].read_bytes()),
                         key=KEY)
        assert a.status == 404 and shape(a)["code"] == "model_not_found", (name, a)
        assert "/etc/ssl" not in a.error["message"].replace(f"'{name}'", "")


# ---------------------------------------------------------------- models: opt-in downloads, cap, labels

def test_downloads_opt_in_cap_and_bounded_labels(tmp_path, speech):
    store = tmp_path / "models"
    store.mkdir()
    for name in ("copy-a", "copy-b"):
        shutil.copytree(tiny_model(), store / name)
    s = start_server(tmp_path, STT_ALLOW_OPEN_ACCESS="1", STT_ALLOW_MODEL_DOWNLOADS="1", STT_MAX_LOADED_MODELS="2",
                     STT_MODELS_DIR=str(store))
    try:
        wav = speech["wav"].read_bytes()
        for i in range(20):   # junk hub ids: tried (opt-in), fail offline, share one metric label
            a = hostile.post(s.url, PATH, hostile.multipart([("model", f"junk/model-{i}".encode())], file=wav))
            assert a.status == 404 and str(ROOT) not in a.body.decode() and "/tmp" not in a.body.decode(), a
        labels = hostile.label_values(metrics(s), "stt_model_loads_total", "model")
        assert "other" in labels and not any(l.startswith("junk/") for l in labels), labels
        for name in ("copy-a", "copy-b", "copy-a"):   # the cap (default + 1) unloads the idle other one
            a = hostile.post(s.url, PATH, hostile.multipart([("model", name.encode())], file=wav))
            assert a.status == 200, a
            loaded = httpx.get(s.url + "/health").json()["loaded_models"]
            assert len(loaded) <= 2 and name in loaded and not any("/" in m for m in loaded), loaded
        assert hostile.metric(metrics(s), "stt_models_loaded") == 2
    finally:
        stop_server(s)


# ---------------------------------------------------------------- lock-out: the default model comes later

def test_health_recovers_when_the_default_model_loads_later(tmp_path):
    late = tmp_path / "late-model"
    late.mkdir()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}/images/common:{ROOT}/images/faster", HOST="127.0.0.1", PORT=str(port),
               STT_MODEL=str(late), STT_MODELS_DIR=str(tmp_path), STT_CPU_THREADS="2", HF_HUB_OFFLINE="1",
               STT_ALLOW_OPEN_ACCESS="1", LOG_LEVEL="warning")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "faster_server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url + "/health", timeout=2)
                if r.status_code == 503 and r.json().get("status") == "error":
                    body = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert body is not None, "the failed load is not reported"
        assert str(tmp_path) not in body["error"] and "retrying" in body["error"], body
        for f in os.listdir(tiny_model()):   # the model arrives (an upload finishing, a mount coming back)
            shutil.copy(os.path.join(tiny_model(), f), late / f)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("/health stayed 503 after the model appeared")
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- auth

def test_refuses_to_start_without_a_key(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}/images/common:{ROOT}/images/faster", HOST="127.0.0.1",
               PORT=str(free_port()), STT_MODEL=tiny_model(), STT_API_KEYS="")
    env.pop("STT_ALLOW_OPEN_ACCESS", None)
    p = subprocess.run([sys.executable, "-m", "faster_server"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "STT_ALLOW_OPEN_ACCESS" in p.stderr
