"""stt_common wired into a tiny app (no model): uploads, decoding, errors, auth, health, metrics."""
import io
import math
import os
import struct
import wave

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from stt_common import STTSettings, create_app, decode_audio, receive_upload

SEEN = []


def wav_bytes(seconds=1.0, rate=8000):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = b"".join(struct.pack("<hh", int(8000 * math.sin(i / 10)), 0) for i in range(int(seconds * rate)))
        w.writeframes(frames)
    return buf.getvalue()


def make(keys="", max_mb=1.0):
    settings = STTSettings(api_keys=keys, max_upload_mb=max_mb)
    app, svc = create_app(settings, title="t")
    svc.ready = lambda: True
    svc.details = lambda: {"model": "none"}

    @svc.api.post("/echo")
    async def echo(request: Request):
        async with receive_upload(request, settings.max_upload_bytes) as up:
            SEEN.append(up.path)
            audio = await decode_audio(up.path)
            return {"samples": int(audio.size), "dtype": str(audio.dtype), "fields": up.fields,
                    "filename": up.filename}

    @svc.api.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    @svc.api.get("/typed/{n}")
    async def typed(n: int):
        return {"n": n}

    svc.mount()
    return TestClient(app, raise_server_exceptions=False)


def err(r, status):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return e


def test_upload_decodes_to_16k_mono_and_removes_the_file():
    c = make()
    r = c.post("/echo", files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")},
               data={"model": "m", "timestamp_granularities[]": ["word", "segment"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(body["samples"] - 16000) < 200 and body["dtype"] == "float32"
    assert body["fields"]["timestamp_granularities[]"] == ["word", "segment"] and body["filename"] == "a.wav"
    assert not os.path.exists(SEEN[-1])


def test_undecodable_is_400_and_file_removed():
    c = make()
    e = err(c.post("/echo", files={"file": ("x.mp3", b"not audio at all" * 100)}), 400)
    assert e["code"] == "invalid_audio" and e["param"] == "file" and "stt-upload" not in e["message"]
    assert not os.path.exists(SEEN[-1])


def test_missing_file_and_not_multipart():
    c = make()
    assert err(c.post("/echo", data={"model": "x"}), 400)["param"] == "file"
    assert err(c.post("/echo", json={"file": "x"}), 400)["code"] == "invalid_content_type"
    assert err(c.post("/echo", files={"file": ("e.wav", b"")}), 400)["code"] == "empty_file"


def test_too_large_is_413():
    c = make(max_mb=0.05)
    e = err(c.post("/echo", files={"file": ("a.wav", wav_bytes(5.0))}), 413)
    assert e["code"] == "file_too_large"


def test_auth():
    c = make(keys="k1, k2")
    assert err(c.post("/echo", files={"file": ("a.wav", wav_bytes())}), 401)["code"] == "invalid_api_key"
    assert err(c.post("/echo", files={"file": ("a.wav", wav_bytes())}, headers={"Authorization": "Bearer no"}),
               401)["code"] == "invalid_api_key"
    ok = c.post("/echo", files={"file": ("a.wav", wav_bytes())}, headers={"Authorization": "Bearer k2"})
    assert ok.status_code == 200
    assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200


def test_error_shapes_never_leak():
    c = make()
    e = err(c.get("/boom"), 500)
    assert e["type"] == "server_error" and "secret" not in e["message"]
    assert err(c.get("/typed/abc"), 400)["param"] == "n"
    assert err(c.get("/nowhere"), 404)["type"] == "invalid_request_error"
    assert err(c.get("/echo"), 405)


def test_health_states_and_metrics():
    settings = STTSettings()
    app, svc = create_app(settings, title="t")
    c = TestClient(app)
    assert c.get("/health").status_code == 503 and c.get("/health").json() == {"status": "loading"}
    svc.ready = lambda: True
    assert c.get("/health").json()["status"] == "ok"
    svc.fail("cannot load")
    r = c.get("/health")
    assert r.json() == {"status": "error", "error": "cannot load"} and "x-health-permanent" not in r.headers
    # a permanent problem says so (the autostart proxy then forwards requests instead of waiting)
    svc.fail("STT_DEVICE=cuda but no GPU", code="device_unavailable")
    r = c.get("/health")
    assert r.status_code == 503 and r.headers["x-health-permanent"] == "true"
    assert r.json() == {"status": "error", "error": "STT_DEVICE=cuda but no GPU", "code": "device_unavailable"}
    svc.recover()
    assert c.get("/health").json()["status"] == "ok"
    svc.fail("cannot load")
    text = c.get("/metrics").text
    for name in ("stt_requests_total", "stt_request_duration_seconds", "stt_audio_seconds_total",
                 "stt_queue_depth", "stt_model_loads_total"):
        assert name in text
    assert 'route="/health"' in text


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("STT_API_KEYS", "a,b ,")
    monkeypatch.setenv("STT_MAX_UPLOAD_MB", "2")
    monkeypatch.setenv("STT_DEVICE", "cuda")
    monkeypatch.setenv("PORT", "9000")
    s = STTSettings()
    assert s.api_key_set == {"a", "b"} and s.max_upload_bytes == 2 * 1024 * 1024
    assert s.effective_compute_type == "float16" and s.port == 9000
    assert "a" not in str(s.public_dict()["api_keys"])
    monkeypatch.setenv("STT_MAX_CONCURRENCY", "0")
    with pytest.raises(ValidationError):
        STTSettings()


def test_job_retry_intervals():
    assert STTSettings().job_retry_waits == [10, 60]   # STT_JOB_RETRIES=2 by default
    assert STTSettings(job_retries=4, job_retry_intervals="5, 30").job_retry_waits == [5, 30, 30, 30]
    assert STTSettings(job_retries=1, job_retry_intervals="0").job_retry_waits == [0]
    assert STTSettings(job_retries=0).job_retry_waits == []
    for bad in ("", "ten", "10,-1", "4000"):
        with pytest.raises(ValueError, match="STT_JOB_RETRY_INTERVALS"):
            STTSettings(job_retry_intervals=bad)


def test_startup_phases_are_marked_once_in_seconds_since_the_process_start():
    import time

    from stt_common.metrics import PROCESS_STARTED_AT, Metrics, process_started_at
    assert PROCESS_STARTED_AT <= time.time() and abs(process_started_at() - PROCESS_STARTED_AT) < 1.0
    m = Metrics()
    m.startup("import")
    first = m.startup_seconds.labels("import")._value.get()
    assert 0 < first <= time.time() - PROCESS_STARTED_AT + 0.01
    time.sleep(0.02)
    m.startup("import")   # a second mark is ignored: the phase ended once
    assert m.startup_seconds.labels("import")._value.get() == first
    assert 'stt_startup_seconds{phase="import"}' in m.render().decode()


def test_request_timeout_reads_its_former_name_too(monkeypatch):
    """STT_REQUEST_TIMEOUT was STT_JOB_TIMEOUT (a name the asynchronous jobs' settings made ambiguous): a host's
    .env written before the rename keeps its value; where both are set the new name wins."""
    monkeypatch.setenv("STT_API_KEYS", "a")
    assert STTSettings().request_timeout == 570
    monkeypatch.setenv("STT_JOB_TIMEOUT", "42")
    assert STTSettings().request_timeout == 42
    monkeypatch.setenv("STT_REQUEST_TIMEOUT", "7")
    assert STTSettings().request_timeout == 7
