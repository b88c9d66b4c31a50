"""WhisperX's routes take `file_url` (the fetch is stt_common.audio_url's, tested in test_audio_url.py and, end to
end with inference, in tests/integration/faster/test_faster_url.py): the real app, built without torch, refuses a
forbidden or unsuitable URL before any model is needed, and a good one is fetched before the model is looked up
(an unknown model's 404 then proves the download happened in the request). A local HTTP server on 127.0.0.2 stands
for a public bucket (allowed by the test's STT_URL_ALLOW_NETWORKS); 127.0.0.1 for the host's own services."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="fastapi is needed by the server")

from fastapi.testclient import TestClient  # noqa: E402

from support.local_http import Receiver, answer, redirect  # noqa: E402

BUCKET = "127.0.0.2"
ROUTES = ("/transcribe", "/v1/audio/transcriptions")


def serving(data: bytes, ctype: str = "audio/wav"):
    return lambda conn, req: conn.sendall(answer(200, data, {"Content-Type": ctype}))


@pytest.fixture
def client(tmp_path, monkeypatch):
    from whisperx_server.app import build_app
    from whisperx_server.settings import Settings

    for k, v in {"STT_ALLOW_OPEN_ACCESS": "1", "STT_TMP_DIR": str(tmp_path), "STT_SPEAKERS_DIR": str(tmp_path),
                 "STT_URL_ALLOW_NETWORKS": f"{BUCKET}/32", "STT_MAX_UPLOAD_MB": "0.05", "STT_URL_TIMEOUT": "5",
                 "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    return TestClient(build_app(Settings()))   # no lifespan: no model loads


def post(client, route, **fields):
    return client.post(route, files={k: (("a.wav", v) if isinstance(v, bytes) else (None, v))
                                     for k, v in fields.items()})


@pytest.mark.parametrize("route", ROUTES)
def test_forbidden_and_unsuitable_urls_are_refused(client, route):
    with Receiver("127.0.0.1", behave=serving(b"RIFF")) as local, \
            Receiver(BUCKET, behave=redirect(local.url + "/x.wav")) as hop, \
            Receiver(BUCKET, behave=serving(b"<html/>", "text/html")) as page, \
            Receiver(BUCKET, behave=serving(b"\0" * 100_000)) as big:
        cases = [(local.url + "/a.wav", 400, "url_forbidden"), (hop.url + "/a.wav", 422, "url_redirect"),
                 (page.url + "/a", 422, "url_unsupported_type"), (big.url + "/a.wav", 422, "url_too_large"),
                 ("ftp://example.com/a.wav", 400, "invalid_url")]
        for url, status, code in cases:
            r = post(client, route, file_url=url, diarize="true")
            err = r.json()["error"]
            assert (r.status_code, err["code"], err["param"]) == (status, code, "file_url"), (url, r.text)
        assert local.connections == 0
        both = post(client, route, file_url=page.url + "/a", file=b"RIFF")
        assert both.status_code == 400 and both.json()["error"]["param"] == "file_url"


@pytest.mark.parametrize("route", ROUTES)
def test_a_good_url_is_fetched_in_the_request(client, route):
    with Receiver(BUCKET, behave=serving(b"RIFF" + b"\0" * 1000)) as bucket:
        r = post(client, route, file_url=bucket.url + "/rec.wav", model="no-such-model")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text
    assert len(bucket.requests) == 1 and bucket.requests[0].target == "/rec.wav"
