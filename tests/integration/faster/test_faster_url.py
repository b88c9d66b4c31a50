"""Audio by URL (`file_url`) on the faster service: a real server, a real local HTTP server holding the recording,
real tiny.en inference, and for jobs a real Redis and RQ worker.

127.0.0.2 stands for a public bucket: the test's server allows exactly that address (STT_URL_ALLOW_NETWORKS, as an
operator would allow a private bucket's network); 127.0.0.1 stands for the host's own services, refused under the
default rules and never connected to."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from support.jobs_support import Worker, needs_redis
from support.local_http import Receiver, answer, redirect

from .conftest import start_server, stop_server, tiny_model

BUCKET = "127.0.0.2"
KEY = "sk-url-test"


def serving(data: bytes, ctype: str = "audio/wav"):
    return lambda conn, req: conn.sendall(answer(200, data, {"Content-Type": ctype}))


@pytest.fixture(scope="module")
def bucket(speech):
    with Receiver(BUCKET, behave=serving(Path(speech["wav"]).read_bytes())) as r:
        yield r


@pytest.fixture(scope="module")
def jobs_env(tmp_path_factory, redis_server):
    return redis_server.jobs_env(tmp_path_factory.mktemp("url-jobs"), STT_URL_ALLOW_NETWORKS=f"{BUCKET}/32",
                                 STT_MAX_UPLOAD_MB="2", STT_URL_TIMEOUT="20", STT_API_KEYS=KEY,
                                 STT_JOB_QUOTA_MB="2",
                                 STT_ALLOW_OPEN_ACCESS="0")


@pytest.fixture(scope="module")
def api(tmp_path_factory, jobs_env):
    s = start_server(tmp_path_factory.mktemp("url-api"), **jobs_env)
    yield s
    stop_server(s)


def post(server, path="/v1/audio/transcriptions", files=None, **data) -> httpx.Response:
    """A multipart form, as `curl -F` sends it: the fields as parts, with or without a file part."""
    parts = {**{k: (None, v) for k, v in data.items()}, **(files or {})}
    return httpx.post(server.url + path, headers={"Authorization": f"Bearer {KEY}"}, files=parts, timeout=120)


def test_a_recording_by_url_transcribes_as_its_upload_does(api, bucket, speech):
    url = f"{bucket.url}/recordings/speech.wav?X-Amz-Signature=0123"
    r = post(api, file_url=url, language="en", response_format="verbose_json")
    assert r.status_code == 200, r.text
    with open(speech["wav"], "rb") as f:
        up = post(api, files={"file": f}, language="en", response_format="verbose_json")
    assert r.json()["text"] == up.json()["text"] and "weather is sunny" in r.json()["text"].lower()
    assert bucket.requests[-1].target == "/recordings/speech.wav?X-Amz-Signature=0123"
    assert "/v1/audio/transcriptions" in httpx.get(api.url + "/openapi.json").text


def test_the_hosts_own_services_are_refused_with_the_default_settings(server, speech):
    """SSRF: the URL field may not reach loopback (as a literal, a name for it, or an IPv4-mapped IPv6 form)."""
    with Receiver("127.0.0.1", behave=serving(Path(speech["wav"]).read_bytes())) as local:
        for url in (f"{local.url}/a.wav", f"http://localhost:{local.port}/a.wav",
                    f"http://[::ffff:127.0.0.1]:{local.port}/a.wav"):
            r = httpx.post(server.url + "/v1/audio/transcriptions", files={"file_url": (None, url)}, timeout=30)
            err = r.json()["error"]
            assert r.status_code == 400 and err["code"] == "url_forbidden" and err["param"] == "file_url", url
        assert local.connections == 0


def test_a_redirect_to_the_host_is_not_followed(api, speech):
    with Receiver("127.0.0.1", behave=serving(Path(speech["wav"]).read_bytes())) as local, \
            Receiver(BUCKET, behave=redirect(f"{local.url}/internal.wav")) as hop:
        r = post(api, file_url=hop.url + "/a.wav")
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_redirect", r.text
    assert local.connections == 0


def test_too_large_wrong_type_unreachable_and_both_fields(api, bucket, speech):
    with Receiver(BUCKET, behave=serving(b"\0" * (3 << 20))) as big:        # the test server's limit is 2 MB
        r = post(api, file_url=big.url + "/big.wav")
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_too_large", r.text
    with Receiver(BUCKET, behave=serving(b"<html>sign in</html>", "text/html")) as page:
        r = post(api, file_url=page.url + "/share/abc")
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_unsupported_type", r.text
    with Receiver(BUCKET) as gone:
        port = gone.port
    r = post(api, file_url=f"http://{BUCKET}:{port}/a.wav")
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_unreachable", r.text
    r = post(api, file_url="ftp://example.com/a.wav")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_url"
    with open(speech["wav"], "rb") as f:
        r = post(api, files={"file": f}, file_url=bucket.url + "/speech.wav")
    assert r.status_code == 400 and r.json()["error"]["param"] == "file_url"
    with Receiver(BUCKET, behave=serving(b"not audio at all", "audio/wav")) as junk:
        r = post(api, file_url=junk.url + "/a.wav")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_audio", r.text


@needs_redis
def test_a_job_downloads_in_its_worker(api, jobs_env, bucket, speech, tmp_path):
    """The API only checks and queues the URL; the worker fetches it. A URL that turns out not to be audio fails
    its job once, with the same error a synchronous request gets; a download that passes the caller's storage quota
    (2 MiB here, with the first job's audio counted) fails its job and is not kept."""
    before = len(bucket.requests)
    r = post(api, "/v1/jobs", file_url=bucket.url + "/speech.wav", language="en")
    assert r.status_code == 202, r.text
    job = r.json()
    with Receiver(BUCKET, behave=serving(b"<html></html>", "text/html")) as page, \
            Receiver(BUCKET, behave=serving(b"\0" * 1_900_000)) as large:
        bad = post(api, "/v1/jobs", file_url=page.url + "/share").json()
        over = post(api, "/v1/jobs", file_url=large.url + "/long.wav").json()
        private = post(api, "/v1/jobs", file_url="http://127.0.0.1:9/a.wav")
        assert private.status_code == 400 and private.json()["error"]["code"] == "url_forbidden"
        time.sleep(0.5)
        assert len(bucket.requests) == before and not page.requests   # nothing fetched by the API
        worker = Worker(tmp_path, {"STT_MODEL": tiny_model(), "STT_MODELS_DIR": str(tmp_path), **jobs_env}, "faster")
        try:
            done = wait(api, job["id"], worker)
            failed = wait(api, bad["id"], worker)
            over_quota = wait(api, over["id"], worker)
        finally:
            worker.stop()
    assert done["status"] == "succeeded" and done["filename"] == "speech.wav", done
    assert len(bucket.requests) == before + 1
    assert "file_url" not in str(done) and bucket.url not in str(done)   # a signed URL is not echoed back
    text = httpx.get(api.url + done["result_url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert "weather is sunny" in text["text"].lower()
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["code"] == "url_unsupported_type", failed
    assert over_quota["status"] == "failed" and over_quota["error"]["code"] == "storage_quota_exceeded", over_quota
    assert (Path(jobs_env["STT_JOBS_DIR"]) / over["id"] / "audio").stat().st_size == 0


def wait(api, job_id: str, worker: Worker, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        if s["status"] in ("succeeded", "failed", "canceled"):
            return s
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {s}\n{worker.logs()}")
