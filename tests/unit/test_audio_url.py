"""stt_common.audio_url: audio by URL (`file_url`) fetched through the outbound guard, and the form that takes it.

Real sockets on loopback: 127.0.0.2 stands for "a public bucket" (the settings allow exactly that address, as an
operator's STT_URL_ALLOW_NETWORKS would), 127.0.0.1 for the host's own services, which must never be reached."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="fastapi is needed by the form's test")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from support.local_http import Receiver, answer, drip, redirect  # noqa: E402
from stt_common import install_error_handlers  # noqa: E402
from stt_common.audio_url import check_url, fetch, fetch_for_job, receive_audio  # noqa: E402
from stt_common.errors import APIError  # noqa: E402

PUBLIC = "127.0.0.2"
AUDIO = b"RIFF" + b"\0" * 5000


def settings(**kw):
    base = dict(max_upload_mb=0.01, url_timeout=5.0, url_allow_private=False, url_allow_networks=f"{PUBLIC}/32",
                jobs_min_free_mb=0, tmp_dir=None)
    base.update(kw)
    s = SimpleNamespace(**base)
    s.max_upload_bytes = int(s.max_upload_mb * 1024 * 1024)
    return s


def serve(body: bytes = AUDIO, ctype: str = "audio/wav", status: int = 200, length: bool = True):
    def behave(conn, req):
        if length:
            conn.sendall(answer(status, body, {"Content-Type": ctype}))
        else:   # no Content-Length: the size shows only as it streams
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nConnection: close\r\n\r\n".encode())
            for i in range(0, len(body), 4096):
                conn.sendall(body[i:i + 4096])
    return behave


def refused(url, s=None, tmp_path=None) -> APIError:
    with pytest.raises(APIError) as e:
        fetch(url, str(tmp_path / "out"), s or settings())
    return e.value


def test_a_recording_is_fetched_with_its_bytes(tmp_path):
    with Receiver(PUBLIC, behave=serve()) as bucket:
        n = fetch(bucket.url + "/meeting.wav?X-Amz-Signature=abc", str(tmp_path / "out"), settings())
    assert n == len(AUDIO) and (tmp_path / "out").read_bytes() == AUDIO
    req = bucket.requests[0]
    assert req.target == "/meeting.wav?X-Amz-Signature=abc" and "audio/*" in req.headers["accept"]


def test_the_hosts_own_services_are_refused_without_a_connection(tmp_path):
    with Receiver("127.0.0.1", behave=serve()) as local:
        for url in (local.url + "/a.wav", f"http://[::ffff:127.0.0.1]:{local.port}/", "http://169.254.169.254/"):
            e = refused(url, tmp_path=tmp_path)
            assert (e.status, e.code, e.param) == (400, "url_forbidden", "file_url"), url
        e = refused(local.url + "/a.wav", settings(url_allow_networks=""), tmp_path)   # the defaults
        assert e.code == "url_forbidden"
    assert local.connections == 0


def test_a_redirect_to_a_private_address_is_not_followed(tmp_path):
    with Receiver("127.0.0.1", behave=serve()) as local, \
            Receiver(PUBLIC, behave=redirect(local.url + "/secret.wav")) as hop:
        e = refused(hop.url + "/a.wav", tmp_path=tmp_path)
    assert (e.status, e.code) == (422, "url_redirect") and "127.0.0.1" in e.message
    assert local.connections == 0


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "gopher://x/", "not a url",
                                 "http://user:pw@example.com/a.wav", ""])
def test_only_http_urls(url, tmp_path):
    e = refused(url, tmp_path=tmp_path)
    assert (e.status, e.code) == (400, "invalid_url")


def test_too_large_is_refused_by_its_header_and_while_it_streams(tmp_path):
    big = b"y" * 20_000   # the settings' cap: 10485 bytes
    for length in (True, False):
        with Receiver(PUBLIC, behave=serve(big, length=length)) as bucket:
            e = refused(bucket.url + "/big.wav", tmp_path=tmp_path)
        assert (e.status, e.code) == (422, "url_too_large"), length
        assert (tmp_path / "out").stat().st_size == 0   # nothing half-written left behind


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/json", "text/plain"])
def test_a_page_is_not_a_recording(ctype, tmp_path):
    with Receiver(PUBLIC, behave=serve(b"<html>login</html>", ctype)) as page:
        e = refused(page.url + "/share", tmp_path=tmp_path)
    assert (e.status, e.code) == (422, "url_unsupported_type") and ctype.split(";")[0] in e.message


@pytest.mark.parametrize("ctype", ["audio/mpeg", "video/mp4", "application/octet-stream", "application/ogg"])
def test_recordings_come_as_audio_video_or_bytes(ctype, tmp_path):
    with Receiver(PUBLIC, behave=serve(ctype=ctype)) as bucket:
        assert fetch(bucket.url + "/x", str(tmp_path / "out"), settings()) == len(AUDIO)


def test_unreachable_error_and_empty_answers(tmp_path):
    with Receiver(PUBLIC, behave=serve(b"gone", "text/plain", 404)) as missing:
        e = refused(missing.url + "/a.wav", tmp_path=tmp_path)
    assert (e.status, e.code) == (422, "url_fetch_failed") and "404" in e.message
    with Receiver(PUBLIC) as nothing:
        port = nothing.port
    e = refused(f"http://{PUBLIC}:{port}/a.wav", tmp_path=tmp_path)   # closed: nothing listens
    assert (e.status, e.code) == (422, "url_unreachable")
    e = refused("http://no-such-host.invalid/a.wav", tmp_path=tmp_path)
    assert (e.status, e.code) == (422, "url_unreachable")
    with Receiver(PUBLIC, behave=serve(b"")) as empty:
        e = refused(empty.url + "/a.wav", tmp_path=tmp_path)
    assert e.code == "url_empty"


def test_the_download_has_one_time_limit(tmp_path):
    with Receiver(PUBLIC, behave=drip(0.2)) as slow:
        t0 = time.monotonic()
        e = refused(slow.url + "/a.wav", settings(url_timeout=1.5), tmp_path)
    assert (e.status, e.code) == (422, "url_timeout") and time.monotonic() - t0 < 3.5


def test_check_url_refuses_literal_private_addresses_before_queueing():
    s = settings(url_allow_networks="")
    assert check_url("  https://bucket.example.com/a.wav ", s) == "https://bucket.example.com/a.wav"
    for url in ("http://127.0.0.1/a", "http://10.0.0.5/a", "http://[::1]/a"):
        with pytest.raises(APIError) as e:
            check_url(url, s)
        assert e.value.code == "url_forbidden"


def test_a_jobs_download_lands_whole_or_not_at_all(tmp_path):
    audio = tmp_path / "audio"
    audio.write_bytes(b"")   # what the submission left
    with Receiver(PUBLIC, behave=serve()) as bucket:
        assert fetch_for_job(bucket.url + "/a.wav", str(audio), settings()) == len(AUDIO)
        assert audio.read_bytes() == AUDIO and not (tmp_path / "audio.part").exists()
        assert fetch_for_job(bucket.url + "/a.wav", str(audio), settings()) is None   # a retry: there already
        assert len(bucket.requests) == 1
    audio.write_bytes(b"")
    with Receiver(PUBLIC, behave=serve(b"z" * 20_000)) as big:
        with pytest.raises(APIError) as e:
            fetch_for_job(big.url + "/a.wav", str(audio), settings())
    assert e.value.code == "url_too_large" and audio.read_bytes() == b"" and not (tmp_path / "audio.part").exists()


@pytest.fixture
def form_app(tmp_path):
    s = settings(tmp_dir=str(tmp_path))
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/t")
    async def t(request: Request):
        async with receive_audio(request, s, max_bytes=s.max_upload_bytes, tmp_dir=s.tmp_dir) as up:
            with open(up.path, "rb") as f:
                return {"size": up.size, "bytes": len(f.read()), "filename": up.filename, "source": up.source_url}

    @app.post("/job")
    async def job(request: Request):
        async with receive_audio(request, s, fetch_now=False, max_bytes=s.max_upload_bytes, tmp_dir=s.tmp_dir) as up:
            return {"size": up.size, "source": up.source_url}

    return TestClient(app)


def form(**fields):
    """Fields as multipart parts (a file part as bytes), as an HTTP client sends a form with an upload."""
    return {k: (("a.wav", v) if isinstance(v, bytes) else (None, v)) for k, v in fields.items()}


def test_the_form_takes_a_file_or_its_url_never_both_nor_neither(form_app):
    with Receiver(PUBLIC, behave=serve()) as bucket:
        url = bucket.url + "/rec/meeting.wav"
        r = form_app.post("/t", files=form(file_url=url, language="fr"))
        assert r.status_code == 200 and r.json() == {"size": len(AUDIO), "bytes": len(AUDIO),
                                                      "filename": "meeting.wav", "source": url}
        r = form_app.post("/job", files=form(file_url=url))   # a job: checked, not fetched
        assert r.json() == {"size": 0, "source": url} and len(bucket.requests) == 1
        both = form_app.post("/t", files=form(file_url=url, file=AUDIO))
        assert both.status_code == 400 and both.json()["error"]["param"] == "file_url"
    neither = form_app.post("/t", files=form(language="fr"))
    assert neither.status_code == 400 and neither.json()["error"]["code"] == "missing_file"
    r = form_app.post("/t", files=form(file=AUDIO))
    assert r.status_code == 200 and r.json()["source"] is None and r.json()["size"] == len(AUDIO)
    bad = form_app.post("/job", files=form(file_url="http://127.0.0.1:1/a.wav"))
    err = bad.json()["error"]
    assert bad.status_code == 400 and err["code"] == "url_forbidden" and err["type"] == "invalid_request_error"


def test_the_forms_schema_offers_file_url_beside_file():
    from stt_common.forms import TranscriptionForm

    schema = TranscriptionForm.openapi_body()["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "file_url"} <= set(schema["properties"]) and "file" not in schema["required"]
