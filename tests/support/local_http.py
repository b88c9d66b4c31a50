"""Small HTTP receivers on loopback for the tests of outbound requests (webhooks, the link): each one a real
socket server in a thread that records what it received and answers as its `behave` says (plain, a redirect, a
slow drip, a large body)."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional


@dataclass
class Received:
    method: str
    target: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)


def _read_request(conn: socket.socket) -> Optional[Received]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Received(method, target, headers, rest[:length])


def answer(status: int = 200, body: bytes = b"ok", headers: Optional[dict] = None) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Receiver:
    """A loopback HTTP server: `behave(conn, request)` sends the answer (default: 200 "ok")."""

    def __init__(self, host: str = "127.0.0.1", behave: Optional[Callable] = None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.behave = behave or (lambda conn, req: conn.sendall(answer()))
        self.requests: List[Received] = []
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket):
        with conn:
            try:
                conn.settimeout(30)
                req = _read_request(conn)
                if req is None:
                    return
                self.requests.append(req)
                self.behave(conn, req)
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self.sock.close()
        self.thread.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def drip(interval: float = 1.0, total: int = 600) -> Callable:
    """An answer sent one byte every `interval` seconds (the headers included): a receiver that never finishes."""
    def behave(conn, req):
        data = answer(200, b"x" * total)
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(interval)
    return behave


def redirect(location: str, status: int = 302) -> Callable:
    return lambda conn, req: conn.sendall(answer(status, b"", {"Location": location}))


def big(size: int) -> Callable:
    return lambda conn, req: conn.sendall(answer(200, b"y" * size))
