"""More requests than slots: every one answered, none lost; refusals are 503 with Retry-After."""
import concurrent.futures as cf
import time

import httpx
import pytest

from support.transcript_wer import wer

from .conftest import start_server, stop_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster-conc"), STT_MAX_CONCURRENCY="1", STT_MAX_QUEUE="1")
    yield s
    stop_server(s)


def test_overload(srv, speech):
    data = open(speech["mp3"], "rb").read()

    def one(i):
        attempts, refusals = 0, []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            attempts += 1
            r = httpx.post(srv.url + "/v1/audio/transcriptions", files={"file": (f"{i}.mp3", data)}, timeout=120)
            if r.status_code != 503:
                return i, r, refusals
            refusals.append(r)
            time.sleep(min(float(r.headers["Retry-After"]), 2.0))
        raise AssertionError(f"request {i} never got through")

    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert sorted(i for i, _, _ in results) == list(range(6))
    refusals = [x for _, _, rs in results for x in rs]
    assert refusals, "6 simultaneous requests against 1 slot + 1 queue place should see 503s"
    for x in refusals:
        assert int(x.headers["Retry-After"]) >= 1 and x.json()["error"]["code"] == "queue_full"
    for _, r, _ in results:
        assert r.status_code == 200 and wer(speech["text"], r.json()["text"]) <= 0.25
    m = httpx.get(srv.url + "/metrics").text
    assert "stt_queue_rejected_total" in m and 'status="500"' not in m
