"""Tiny stand-in service for the autostart proxy's tests (stdlib only).

GET  /health            503 {"status": "loading"} for HEALTH_DELAY seconds after start, then 200;
                        HEALTH_DELAY < 0: never ready; with "jobs" once POST /jobs set them
HEALTH_PERMANENT=code   a permanent problem, as the whisper images' STT_DEVICE=cuda without a GPU: /health and
                        every other request answer 503 {"error": {"message", "type", "code": "device_unavailable"}}
HEALTH_PERMANENT=header the same, marked by the header X-Health-Permanent: true instead (code "misconfigured")
POST /jobs?queued=N&running=M   asynchronous jobs /health reports, as the whisper images do
POST /degrade?deps=redis        /health says degraded and why, as the whisper images do while Redis is away
                                (jobs unknown); deps= (empty) makes it ok again
GET  /hangup-once       the first time: the connection is closed before any answer (the service going away
                        mid-request); then 200 {"calls": n}
GET  /headers           the request line and headers as JSON
GET  /slow?seconds=N    answers after N seconds
GET  /sse?n=N&delay=S   N server-sent events, S seconds apart, written as produced
GET  /ws                a WebSocket (Upgrade): first a text message with the handshake's path, headers and offered
                        subprotocols (the first one is accepted), then every message echoed; the text "close:CODE:REASON"
                        makes it close with that code; ?refuse=N answers the upgrade with HTTP N instead
POST /refuse?status=N   answers N before reading the body and closes the connection, as the whisper images' checks
                        (auth, quotas, the jobs' disk) do: with Expect: 100-continue, no '100 Continue' is sent
LISTEN_DELAY=S          the port opens S seconds after the start (a service still starting up: Docker's own port
                        proxy takes connections and drops them until then)
POST /echo              counts the body (Content-Length or chunked): {"bytes", "sha256"};
                        with ?back=1 streams the body back instead
"""

import base64
import hashlib
import json
import os
import signal
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

START = time.monotonic()
DELAY = float(os.environ.get("HEALTH_DELAY", "0"))
CHUNK = 1 << 20
JOBS = {}
DEGRADED = []
CALLS = {"hangup": 0}
PERMANENT = os.environ.get("HEALTH_PERMANENT", "")
PROBLEM = {"code": ("STT_DEVICE=cuda but no GPU is visible in this container (test service)", "device_unavailable"),
           "header": ("this test service is misconfigured for good", "misconfigured")}.get(PERMANENT)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        self.wfile.write(body)

    def handle_expect_100(self):
        if urlsplit(self.path).path == "/refuse":
            return True   # answered without the body: no '100 Continue'
        return super().handle_expect_100()

    def _query(self):
        parts = urlsplit(self.path)
        return parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def _problem(self):
        """The permanent problem's answer (HEALTH_PERMANENT), on /health and on every request."""
        message, code = PROBLEM
        headers = [("X-Health-Permanent", "true")] if PERMANENT == "header" else []
        self._json(503, {"error": {"message": message, "type": "server_error", "param": None, "code": code},
                         "path": self.path}, headers)

    # -- WebSocket (RFC 6455), enough for the proxy's relay: unfragmented frames, masked from the client
    def _ws_send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
                                         if n < 65536 else bytes([127]) + n.to_bytes(8, "big"))
        self.wfile.write(head + payload)
        self.wfile.flush()

    def _ws_recv(self):
        head = self.rfile.read(2)
        if len(head) < 2:
            return None, b""
        opcode, n = head[0] & 0x0F, head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(self.rfile.read(2), "big")
        elif n == 127:
            n = int.from_bytes(self.rfile.read(8), "big")
        mask = self.rfile.read(4) if head[1] & 0x80 else bytes(4)
        data = self.rfile.read(n)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def _websocket(self, q):
        if q.get("refuse"):
            self._json(int(q["refuse"]), {"error": "refused"})
            return
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        if offered:
            self.send_header("Sec-WebSocket-Protocol", offered[0])
        self.end_headers()
        self.close_connection = True
        hello = {"path": self.path, "protocols": offered, "headers": [[k, v] for k, v in self.headers.items()]}
        self._ws_send(0x1, json.dumps(hello).encode())
        while True:
            opcode, data = self._ws_recv()
            if opcode is None:
                return
            if opcode == 0x8:                      # close: answered with the same code
                self._ws_send(0x8, data[:2])
                return
            if opcode == 0x9:
                self._ws_send(0xA, data)
            elif opcode == 0x1 and data.startswith(b"close:"):
                _, code, reason = data.decode().split(":", 2)
                self._ws_send(0x8, int(code).to_bytes(2, "big") + reason.encode())
                self._ws_recv()
                return
            elif opcode in (0x1, 0x2):
                self._ws_send(opcode, data)

    def do_GET(self):
        path, q = self._query()
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket" and not PROBLEM:
            self._websocket(q)
        elif PROBLEM:
            self._problem()
        elif path == "/health":
            ready = DELAY >= 0 and time.monotonic() - START >= DELAY
            body = {"status": "ok" if ready else "loading"}
            if JOBS:
                body["jobs"] = dict(JOBS)
            if ready and DEGRADED:
                body.update(status="degraded", degraded=list(DEGRADED), jobs={"error": "jobs_unavailable"})
            self._json(200 if ready else 503, body)
        elif path == "/hangup-once":
            CALLS["hangup"] += 1
            if CALLS["hangup"] == 1:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._json(200, {"calls": CALLS["hangup"]})
        elif path == "/headers":
            self._json(200, {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]})
        elif path == "/slow":
            seconds = float(q.get("seconds", "1"))
            time.sleep(seconds)
            self._json(200, {"slept": seconds})
        elif path == "/sse":
            n, delay = int(q.get("n", "3")), float(q.get("delay", "0.5"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.end_headers()
            self.close_connection = True
            for i in range(n):
                self.wfile.write(f"id: {i}\ndata: event {i}\n\n".encode())
                self.wfile.flush()
                if i < n - 1:
                    time.sleep(delay)
        else:
            self._json(404, {"error": "not found", "path": path})

    def _body_chunks(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                if not (yield from self._read(size)):
                    return
                self.rfile.readline()
        else:
            yield from self._read(int(self.headers.get("Content-Length", "0")))

    def _read(self, left: int):
        """Yield `left` bytes of the body, CHUNK at a time; return False if the client hung up first."""
        while left:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                return False
            left -= len(data)
            yield data
        return True

    def do_POST(self):
        path, q = self._query()
        if PROBLEM:
            for _ in self._body_chunks():
                pass
            self._problem()
            return
        if path == "/refuse":
            self.close_connection = True
            self._json(int(q.get("status", "507")), {"error": {"message": "refused before the body was read"}},
                       headers=[("Connection", "close")])
            return
        if path == "/jobs":
            JOBS.update(queued=int(q.get("queued", "0")), running=int(q.get("running", "0")))
            self._json(200, JOBS)
            return
        if path == "/degrade":
            DEGRADED[:] = [d for d in q.get("deps", "").split(",") if d]
            self._json(200, {"degraded": DEGRADED})
            return
        if path != "/echo":
            self._json(404, {"error": "not found"})
            return
        if q.get("back"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for data in self._body_chunks():
                self.wfile.write(data)
            return
        digest, count = hashlib.sha256(), 0
        for data in self._body_chunks():
            digest.update(data)
            count += len(data)
        self._json(200, {"bytes": count, "sha256": digest.hexdigest(),
                         "chunked": "chunked" in self.headers.get("Transfer-Encoding", "")})


def main():
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # PID 1 has no default SIGTERM action
    time.sleep(float(os.environ.get("LISTEN_DELAY", "0")))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
