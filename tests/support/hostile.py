"""Hostile and unlucky requests, sent as a real client would (raw sockets where a normal client would
hide what matters: an answer before the body is sent, a hang-up mid-job). Used by both services'
hardening tests and by bench/abuse.py. Loopback only."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

BOUNDARY = "hostile-boundary-7d1f"


def part(name: str, value: bytes, filename: Optional[str] = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n"
    if filename:
        head += "Content-Type: application/octet-stream\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def multipart(fields: Iterable[Tuple[str, bytes]] = (), file: Optional[bytes] = None,
              file_first: bool = False) -> bytes:
    parts = [part(n, v if isinstance(v, bytes) else str(v).encode()) for n, v in fields]
    if file is not None:
        f = part("file", file, "audio.bin")
        parts = [f] + parts if file_first else parts + [f]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes, seconds: float, sent: int):
        self.status, self.headers, self.body, self.seconds, self.sent = status, headers, body, seconds, sent

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        return self.json()["error"]

    def __repr__(self):
        return f"Answer({self.status}, {self.body[:200]!r}, {self.seconds:.2f}s, sent={self.sent})"


def _request_head(url: str, path: str, length: Optional[int], key: Optional[str], extra: dict) -> Tuple[str, int, bytes]:
    u = urlsplit(url)
    assert u.hostname in ("127.0.0.1", "localhost"), "loopback only"
    lines = [f"POST {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}", "Connection: close"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return u.hostname, u.port, ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket, t0: float, sent: int) -> Answer:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return Answer(status, headers, body, time.monotonic() - t0, sent)


def post(url: str, path: str, body: bytes, key: Optional[str] = None, length: Optional[int] = None,
         send_limit: Optional[int] = None, timeout: float = 120, chunk: int = 65536, extra: Optional[dict] = None) -> Answer:
    """POST `body` (or only its first `send_limit` bytes while declaring `length`); read the answer even when
    the server answers and closes before the body is all sent."""
    length = len(body) if length is None else length
    host, port, head = _request_head(url, path, length, key, extra or {})
    t0 = time.monotonic()
    sent = 0
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head)
        todo = body if send_limit is None else body[:send_limit]
        try:
            for i in range(0, len(todo), chunk):
                s.sendall(todo[i:i + chunk])
                sent += len(todo[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        return _read_answer(s, t0, sent)


def hang_up_after(url: str, path: str, body: bytes, seconds: float, key: Optional[str] = None) -> None:
    """Send the whole request, wait `seconds` for the job to be under way, then close the connection."""
    host, port, head = _request_head(url, path, len(body), key, {})
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head + body)
        time.sleep(seconds)


def hang_up_on(url: str, path: str, body: bytes, release, key: Optional[str] = None, timeout: float = 120) -> None:
    """Send the whole request, then close the connection once `release` (a threading.Event) is set."""
    host, port, head = _request_head(url, path, len(body), key, {})
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head + body)
        release.wait(timeout)


def hang_up_mid_stream(url: str, path: str, body: bytes, events: int = 1, key: Optional[str] = None,
                       timeout: float = 60) -> bytes:
    """Send a streaming (SSE) request, read until `events` events have come, then close the connection;
    returns what was read."""
    host, port, head = _request_head(url, path, len(body), key, {})
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head + body)
        while data.count(b"data: ") < events:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def sse_events(body: bytes) -> List[dict]:
    """The JSON events of a text/event-stream body (`data: {...}` lines)."""
    return [json.loads(line[6:]) for line in body.decode("utf-8", "replace").splitlines()
            if line.startswith("data: {")]


# ---------------------------------------------------------------- audio made with ffmpeg

def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def silence_flac(path: Path, seconds: float) -> Path:
    """Silence as FLAC: an hour is well under 1 MB (the issue's 656 KB file)."""
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(seconds), "-c:a", "flac", str(path))
    return path


def headerless_stream(path: Path, seconds: float) -> Path:
    """Silence as FLAC written to a pipe: no length in its header (PyAV's duration is None), so only
    decoding finds out how long it is."""
    with open(path, "wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(seconds),
                        "-c:a", "flac", "-f", "flac", "pipe:1"], stdout=out, check=True)
    return path


def repeat(src: Path, dst: Path, times: int) -> Path:
    lst = dst.with_suffix(".txt")
    lst.write_text("".join(f"file '{src}'\n" for _ in range(times)))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(lst), str(dst))
    return dst


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def label_values(text: str, name: str, label: str) -> List[str]:
    out = set()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line:
            out.add(line.split(f'{label}="', 1)[1].split('"', 1)[0])
    return sorted(out)


def wait_idle(url: str, timeout: float) -> float:
    """Seconds until the server at `url` reports no inference in progress (/metrics); fails after `timeout`."""
    from urllib.request import urlopen

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with urlopen(url + "/metrics", timeout=5) as r:
            if metric(r.read().decode(), "stt_inference_in_progress") == 0:
                return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError("the job is still running")
