"""The rendered vhosts in a real nginx (`nginx -t`, then serving on 127.0.0.1), in front of
a small upstream that records what reaches it. Fast: no sandbox host needed."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import shutil
import ssl
import socket
import subprocess
import threading
import types

import bcrypt
import pytest
import requests

from support.private_nginx import start_nginx
from stages.settings import Platform, read_group_data
from stages.web import render_auth_map, render_http_vhost, render_https_vhost, render_shared, render_tls_params

pytestmark = pytest.mark.skipif(not shutil.which("nginx") and not shutil.which("/usr/sbin/nginx"),
                                reason="nginx is not installed (make docker installs it)")
PORTAL = "https://portal.test.example"
KEY = "sk-sandbox-" + "x" * 32  # as long as the keys make sandbox generates
KEY2 = "sk.second+key/b64=="     # a second key, with the token characters a regex would read as operators
PROXY_KEY = "pk-" + "p" * 64     # what stages/identity.py makes on the host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.ThreadingHTTPServer):
    seen: list


class Handler(http.server.BaseHTTPRequestHandler):
    def _websocket(self):
        """A WebSocket upgrade: accepted, answered with one text message saying what reached it, then closed."""
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        seen = {"path": self.path, "authorization": self.headers.get("Authorization"), "protocols": offered}
        self.server.seen.append(("WEBSOCKET", self.path, seen["authorization"], self.headers.get("Host")))
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] +
                                                "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if offered:
            self.send_header("Sec-WebSocket-Protocol", offered[0])
        self.end_headers()
        payload = json.dumps(seen).encode()
        head = bytes([0x81, len(payload)]) if len(payload) < 126 else bytes([0x81, 126]) + len(payload).to_bytes(2, "big")
        self.wfile.write(head + payload + bytes([0x88, 2, 0x03, 0xE8]))
        self.wfile.flush()
        self.close_connection = True

    def _answer(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        if self.path == "/__hang_up":   # the autostart proxy going away mid-request (a restart)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/__own_502":   # an answer of the proxy's own (start_failed): passed through as it is
            body = b'{"error": {"message": "compose up failed", "type": "start_failed", "code": 502}}'
            self.send_response(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization"), self.headers.get("Host")))
        self.server.users.append(self.headers.get("X-STT-User"))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("nginx")
    upstream = Upstream(("127.0.0.1", 0), Handler)
    upstream.seen, upstream.users = [], []
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, https_port = _free_port(), _free_port()
    values = read_group_data(
        domain="test.example", cors_origin=PORTAL, tls_mode="selfsigned", selfsigned_dir=str(root / "tls"),
        http_port=f"127.0.0.1:{http_port}", https_port=f"127.0.0.1:{https_port}", listen_ipv6=False,
        htpasswd_file=str(root / "htpasswd"), acme_webroot=str(root / "acme"), body_limit="1M",
        autostart_port=upstream.server_address[1],
    )
    data = Platform.from_group_data(values)
    for d in ("conf.d", "snippets", "sites-enabled", "tls", "acme", "logs"):
        (root / d).mkdir()
    svc = data.service("faster")
    host = svc.vhost
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=DNS:{host}", "-keyout", str(root / "tls" / f"{host}.key"),
                    "-out", str(root / "tls" / f"{host}.crt")], check=True, capture_output=True)
    (root / "htpasswd").write_text("someone:else\nwhisper:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n"
                                   + "colleague:" + bcrypt.hashpw(b"pw2", bcrypt.gensalt(4)).decode() + "\n")
    (root / "conf.d" / "whisper-platform.conf").write_text(render_shared(data))
    (root / "proxy-key.conf").write_text(f'default "Bearer {PROXY_KEY}";\n')   # as stages/identity.py writes it
    (root / "conf.d" / "whisper-platform-auth.conf").write_text(render_auth_map(data, [KEY, KEY2],
                                                                                proxy_key_conf=str(root / "proxy-key.conf")))
    (root / "snippets" / "whisper-platform-tls.conf").write_text(render_tls_params())
    (root / "sites-enabled" / f"{host}-http").write_text(render_http_vhost(svc, data))
    (root / "sites-enabled" / host).write_text(render_https_vhost(svc, data))
    proc = start_nginx(root, f"    include {root}/conf.d/*.conf;\n    include {root}/sites-enabled/*;", https_port)
    session = requests.Session()
    ca = str(root / "tls" / f"{host}.crt")

    def call(method, path, port=https_port, scheme="https", **kw):
        # the vhost's name for SNI and Host, the connection to 127.0.0.1
        from requests.adapters import HTTPAdapter

        class Resolve(HTTPAdapter):
            def init_poolmanager(self, *a, **k):
                k["server_hostname"] = host
                k["assert_hostname"] = host
                super().init_poolmanager(*a, **k)

        session.mount("https://127.0.0.1", Resolve())
        headers = {"Host": host, **kw.pop("headers", {})}
        return session.request(method, f"{scheme}://127.0.0.1:{port}{path}", headers=headers,
                               allow_redirects=False, timeout=10, verify=ca, **kw)

    def websocket(path="/v1/realtime", **kw):
        """One WebSocket through nginx: what the upstream saw (its one message), or the refusal's status."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect
        ctx = ssl.create_default_context(cafile=ca)
        try:
            with connect(f"wss://{host}:{https_port}{path}", ssl=ctx, server_hostname=host,
                         sock=socket.create_connection(("127.0.0.1", https_port)), open_timeout=10, **kw) as ws:
                return json.loads(ws.recv(timeout=10))
        except InvalidStatus as e:
            return e.response.status_code

    yield types.SimpleNamespace(call=call, seen=upstream.seen, users=upstream.users, http_port=http_port, host=host,
                                websocket=websocket)
    proc.terminate()
    proc.wait(5)
    upstream.shutdown()


def test_credentials(nginx):
    nginx.seen.clear()
    assert nginx.call("GET", "/v1/models").status_code == 401
    assert nginx.call("GET", "/v1/models", auth=("whisper", "wrong")).status_code == 401
    assert nginx.call("GET", "/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert nginx.seen == []  # nothing reached the service
    assert nginx.call("GET", "/v1/models", auth=("whisper", "pw")).status_code == 200
    # basic auth passed: the service gets the proxy key (never a client's API key) and the user's name
    assert nginx.seen[-1] == ("GET", "/v1/models", f"Bearer {PROXY_KEY}", nginx.host)
    assert nginx.users[-1] == "whisper"
    assert nginx.call("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert nginx.seen[-1][2] == f"Bearer {KEY}" and not nginx.users[-1]


def test_each_basic_auth_user_reaches_the_service_as_itself(nginx):
    """Two htpasswd users: each one's own name, which no client can choose (nginx sets the header every time)."""
    nginx.seen.clear()
    nginx.users.clear()
    assert nginx.call("GET", "/v1/jobs", auth=("whisper", "pw"), headers={"X-STT-User": "colleague"}).status_code == 200
    assert nginx.call("GET", "/v1/jobs", auth=("colleague", "pw2")).status_code == 200
    assert nginx.call("GET", "/v1/jobs", headers={"Authorization": f"Bearer {KEY}", "X-STT-User": "whisper"}) \
        .status_code == 200
    assert nginx.users == ["whisper", "colleague", None]   # an empty value: nginx drops the client's header
    assert [s[2] for s in nginx.seen] == [f"Bearer {PROXY_KEY}", f"Bearer {PROXY_KEY}", f"Bearer {KEY}"]
    # the proxy key is no API key: a client that learned it is still refused by nginx
    assert nginx.call("GET", "/v1/jobs", headers={"Authorization": f"Bearer {PROXY_KEY}"}).status_code == 401


def test_bearer_match_is_exact_and_case_sensitive(nginx):
    nginx.seen.clear()
    for wrong in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer {KEY.upper()}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}",
                  f"xBearer {KEY}", f"Bearer  {KEY}", "Bearer skXsecond+key/b64==",
                  "Bearer sk.secondkey/b64==", "Bearer sk.second++key/b64=="):
        assert nginx.call("GET", "/v1/models", headers={"Authorization": wrong}).status_code == 401, wrong
    assert nginx.seen == []  # refused by nginx: the service was never woken
    for key in (KEY, KEY2):
        assert nginx.call("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200, key
        assert nginx.seen[-1][2] == f"Bearer {key}"


def test_keys_outside_bearer_token_syntax_are_refused_at_render(nginx):
    from stages.settings import defaults
    data = types.SimpleNamespace(basic_auth_realm=defaults()["basic_auth_realm"])
    for bad in ('k"ey', "k$ey", "k ey", "k\\ey", "ke(y)*", "k=ey"):
        with pytest.raises(ValueError, match="WHISPER_API_KEY"):
            render_auth_map(data, [bad])


def test_cors(nginx):
    nginx.seen.clear()
    pre = nginx.call("OPTIONS", "/v1/audio/transcriptions",
                     headers={"Origin": PORTAL, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == PORTAL
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert nginx.seen == []  # answered by nginx, the service was not woken
    other = nginx.call("OPTIONS", "/", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    denied = nginx.call("GET", "/", headers={"Origin": PORTAL})
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == PORTAL
    ok = nginx.call("GET", "/", headers={"Origin": PORTAL}, auth=("whisper", "pw"))
    assert ok.headers["Access-Control-Allow-Origin"] == PORTAL


def test_redirect_and_acme(nginx):
    r = nginx.call("GET", "/docs?x=1", port=nginx.http_port, scheme="http")
    assert r.status_code == 308 and r.headers["Location"] == f"https://{nginx.host}/docs?x=1"
    assert nginx.call("GET", "/.well-known/acme-challenge/t", port=nginx.http_port, scheme="http").status_code == 404


def test_body_limit_and_streaming_upload(nginx):
    too_big = nginx.call("POST", "/v1/audio/transcriptions", auth=("whisper", "pw"), data=b"\0" * (2 * 1024 * 1024))
    assert too_big.status_code == 413
    fine = nginx.call("POST", "/v1/audio/transcriptions", auth=("whisper", "pw"), data=b"\0" * (512 * 1024))
    assert fine.status_code == 200


def test_realtime_websocket_on_both_auth_paths(nginx):
    """Live transcription's WebSocket passes the upgrade with an API key, with basic auth (the service then gets
    our key), or with a credential in the subprotocol (browsers), which reaches the service unchecked by nginx and
    without our key; anything else stays outside."""
    nginx.seen.clear()
    basic = "Basic " + base64.b64encode(b"whisper:pw").decode()
    with_key = nginx.websocket(additional_headers={"Authorization": f"Bearer {KEY}"})
    assert with_key["authorization"] == f"Bearer {KEY}" and with_key["path"] == "/v1/realtime"
    assert nginx.websocket("/v1/realtime?intent=transcription",
                           additional_headers={"Authorization": basic})["authorization"] == f"Bearer {KEY}"
    protocols = ["realtime", "openai-insecure-api-key.ek_client_secret"]
    browser = nginx.websocket(subprotocols=protocols)
    assert browser == {"path": "/v1/realtime", "authorization": None, "protocols": protocols}
    # a browser that holds basic-auth credentials and a secret: the secret is what the service checks
    assert nginx.websocket(subprotocols=protocols, additional_headers={"Authorization": basic})["authorization"] is None
    # our own page may use basic auth; another site's page may not ride on a visitor's credentials
    mine = {"Authorization": basic, "Origin": f"https://{nginx.host}"}
    assert nginx.websocket(additional_headers=mine)["authorization"] == f"Bearer {KEY}"
    assert nginx.websocket(additional_headers={"Authorization": basic, "Origin": "https://evil.example"}) == 403
    assert nginx.websocket(additional_headers={"Authorization": f"Bearer {KEY}",
                                               "Origin": "https://app.example"})["authorization"] == f"Bearer {KEY}"
    seen = len(nginx.seen)
    assert nginx.websocket() == 401
    assert nginx.websocket(additional_headers={"Authorization": "Bearer nope"}) == 401
    assert nginx.websocket(subprotocols=["realtime"]) == 401
    # the subprotocol opens /v1/realtime only
    assert nginx.websocket("/v1/models", subprotocols=protocols) == 401
    assert nginx.call("GET", "/v1/models", headers={"Sec-WebSocket-Protocol": protocols[1]}).status_code == 401
    assert len(nginx.seen) == seen   # nothing refused reached the service
def test_proxy_unreachable_is_a_503_with_retry_after(nginx):
    """The autostart proxy restarting (connection refused, or closed mid-request): a 503 with Retry-After in
    OpenAI's error shape, never nginx's own 502 page; the proxy's own 502 answers pass through unchanged."""
    gone = nginx.call("GET", "/__hang_up", auth=("whisper", "pw"), headers={"Origin": PORTAL})
    assert gone.status_code == 503, gone.text
    assert gone.headers["Retry-After"] == "5" and gone.headers["Access-Control-Allow-Origin"] == PORTAL
    assert gone.json()["error"]["code"] == "service_unavailable" and gone.json()["error"]["type"] == "server_error"
    own = nginx.call("GET", "/__own_502", auth=("whisper", "pw"))
    assert own.status_code == 502 and own.json()["error"]["type"] == "start_failed"
    # credentials are still checked first
    assert nginx.call("GET", "/__hang_up").status_code == 401
