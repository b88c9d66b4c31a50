"""Every bad input gets the right status in OpenAI's error shape, never a 500; temp files always removed."""
import httpx
import openai
import pytest

from .conftest import start_server, stop_server

KEY = "test-key-123"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster-err"), STT_MAX_UPLOAD_MB="1", STT_API_KEYS=KEY)
    yield s
    stop_server(s)


def post(srv, files=None, data=None, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(srv.url + "/v1/audio/transcriptions", files=files, data=data, headers=headers, timeout=60, **kw)


def err(r, status):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return e


def test_auth(srv, speech):
    assert err(post(srv, files={"file": open(speech["wav"], "rb")}, key=None), 401)["code"] == "invalid_api_key"
    assert err(post(srv, files={"file": open(speech["wav"], "rb")}, key="wrong"), 401)["code"] == "invalid_api_key"
    assert httpx.get(srv.url + "/health").status_code == 200
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    ok = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    with open(speech["wav"], "rb") as f:
        assert ok.audio.transcriptions.create(model="whisper-1", file=f).text


@pytest.mark.parametrize("data,param", [
    ({"response_format": "xml"}, "response_format"),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
    ({"temperature": "warm"}, "temperature"),
    ({"temperature": "3"}, "temperature"),
    ({"language": "xx"}, "language"),
    ({"stream": "true", "response_format": "verbose_json"}, "stream"),
    ({"stream": "perhaps"}, "stream"),
])
def test_bad_fields(srv, speech, data, param):
    assert err(post(srv, files={"file": open(speech["wav"], "rb")}, data=data), 400)["param"] == param


def test_word_granularity_with_json_via_sdk(srv, speech):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        with open(speech["wav"], "rb") as f:
            c.audio.transcriptions.create(model="whisper-1", file=f, timestamp_granularities=["word"])


def test_bad_bodies(srv, tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00\x01not audio" * 1000)
    assert err(post(srv, files={"file": open(junk, "rb")}), 400)["code"] == "invalid_audio"
    assert err(post(srv, files={"file": ("e.wav", b"")}), 400)["param"] == "file"
    assert err(post(srv, data={"model": "whisper-1"}), 400)["param"] == "file"
    assert err(post(srv, json={"file": "x"}), 400)["code"] == "invalid_content_type"
    assert err(httpx.post(
        srv.url + "/v1/audio/transcriptions", content=b"--b\r\nContent-Disposition: nothing\r\n\r\nx\r\n--b--\r\n",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"}), 400)


def test_too_large(srv, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    assert err(post(srv, files={"file": open(big, "rb")}), 413)["code"] == "file_too_large"

    def chunks():  # no Content-Length: the cap applies while streaming
        for _ in range(40):
            yield b"x" * 65536
    r = httpx.post(srv.url + "/v1/audio/transcriptions", content=chunks(), timeout=60,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code in (400, 413)


def test_unknown_and_unloadable_models(srv, speech):
    e = err(post(srv, files={"file": open(speech["wav"], "rb")}, data={"model": "gpt-9"}), 404)
    assert e["code"] == "model_not_found" and "whisper-1" in e["message"]
    # a hub id: downloads are an operator opt-in (tests/integration/faster/test_faster_hardening.py has it on)
    e = err(post(srv, files={"file": open(speech["wav"], "rb")}, data={"model": "nobody/no-such-model"}), 404)
    assert "downloads are off" in e["message"]


def test_wrong_routes_and_methods(srv):
    assert err(httpx.get(srv.url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"}), 405)
    assert err(httpx.get(srv.url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}), 404)


def test_no_500_and_no_temp_files_left(srv):
    m = httpx.get(srv.url + "/metrics").text
    assert 'status="500"' not in m, m
    assert not list(srv.tmp_dir.iterdir())


def test_cuda_without_gpu_is_a_permanent_problem_on_health(tmp_path, speech):
    """STT_DEVICE=cuda where no GPU is visible (this machine has none): /health says it is permanent (the autostart
    proxy's contract, autostart/README.md) and every answer carries the same error. The image-level twin:
    test_faster_gpu_image.py."""
    s = start_server(tmp_path, timeout=60, until=lambda r: r.status_code == 503 and r.json()["status"] == "error",
                     STT_DEVICE="cuda", STT_API_KEYS=KEY)
    try:
        h = httpx.get(s.url + "/health", timeout=10)
        assert h.status_code == 503 and h.headers["x-health-permanent"] == "true"
        assert h.json()["code"] == "device_unavailable" and "no GPU is visible" in h.json()["error"]
        with open(speech["wav"], "rb") as f:
            e = err(post(s, files={"file": f}), 503)
        assert e["code"] == "device_unavailable" and e["message"] == h.json()["error"]
    finally:
        stop_server(s)
