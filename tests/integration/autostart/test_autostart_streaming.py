"""Bodies stream through the proxy both ways: a 200 MB upload with the proxy's memory flat,
server-sent events delivered as produced."""

import hashlib
import http.client
import json
import os
import threading
import time

import psutil
import pytest

pytestmark = pytest.mark.docker

MiB = 1 << 20
UPLOAD_MIB = 200
# the proxy never holds the body: its resident memory may grow by buffers, not by the upload
RSS_GROWTH_LIMIT = 40 * MiB


class PeakRSS:
    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_200mb_upload_streams_with_flat_proxy_memory(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200  # started; warm the code paths too
    assert proxy.request("POST", svc.host, "/echo", data=b"x" * MiB).json()["bytes"] == MiB

    block = os.urandom(MiB)
    digest = hashlib.sha256()
    for _ in range(UPLOAD_MIB):
        digest.update(block)
    baseline = psutil.Process(proxy.proc.pid).memory_info().rss

    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=300)
    t0 = time.monotonic()
    with PeakRSS(proxy.proc.pid) as rss:
        conn.putrequest("POST", "/echo", skip_host=True)
        conn.putheader("Host", svc.host)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(UPLOAD_MIB * MiB))
        conn.endheaders()
        for _ in range(UPLOAD_MIB):
            conn.send(block)
        resp = conn.getresponse()
        body = resp.read()
    elapsed = time.monotonic() - t0
    conn.close()

    assert resp.status == 200, body[:500]
    result = json.loads(body)
    assert result["bytes"] == UPLOAD_MIB * MiB
    assert result["sha256"] == digest.hexdigest()
    assert result["chunked"] is False  # Content-Length passed on, not re-framed
    growth = rss.peak - baseline
    print(f"\n200 MiB upload through the proxy: {elapsed:.1f}s, proxy RSS baseline "
          f"{baseline / MiB:.1f} MiB, peak {rss.peak / MiB:.1f} MiB (+{growth / MiB:.1f} MiB)")
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / MiB:.1f} MiB during a {UPLOAD_MIB} MiB upload"


def test_chunked_upload_and_streamed_download(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    block = os.urandom(256 * 1024)

    def gen():
        for _ in range(40):  # 10 MiB, sent chunked (no Content-Length)
            yield block

    r = proxy.request("POST", svc.host, "/echo", data=gen())
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == 40 * len(block) and r.json()["chunked"] is True
    assert r.json()["sha256"] == hashlib.sha256(block * 40).hexdigest()

    back = proxy.request("POST", svc.host, "/echo?back=1", data=block * 8)
    assert back.status_code == 200 and back.content == block * 8


def test_server_sent_events_arrive_as_produced(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    assert proxy.get(svc.host, "/health").status_code == 200

    n, delay = 4, 1.0
    t0 = time.monotonic()
    r = proxy.get(svc.host, f"/sse?n={n}&delay={delay}", stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/event-stream"
    arrivals, buf = [], b""
    for chunk in r.iter_content(chunk_size=None):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            arrivals.append((time.monotonic() - t0, event.decode()))
    total = time.monotonic() - t0
    assert [e for _, e in arrivals] == [f"id: {i}\ndata: event {i}" for i in range(n)]
    assert total >= (n - 1) * delay
    first = arrivals[0][0]
    assert first < delay, f"first event after {first:.2f}s: buffered instead of streamed"
    # each event arrives about `delay` after the previous one, not all at the end
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:])]
    assert all(g > delay * 0.5 for g in gaps), gaps
