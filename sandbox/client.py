"""Reach the sandbox's vhosts from this machine: connect to 127.0.0.1:8443 while speaking
to `whisper.sandbox.test` (SNI, Host header, certificate check against the sandbox's own
self-signed certificate). Used by the demo, the end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".sandbox"
NAME = os.environ.get("SANDBOX_NAME", "whisper-sandbox")
HTTPS_PORT = int(os.environ.get("SANDBOX_HTTPS_PORT", "8443"))


def secrets() -> dict[str, str]:
    values = {}
    for line in (STATE / "secrets.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def certificate(vhost: str) -> Path:
    """The vhost's self-signed certificate, fetched from the sandbox once."""
    path = STATE / f"{vhost}.crt"
    pem = subprocess.run(["docker", "exec", NAME, "cat", f"/etc/ssl/whisper-platform/{vhost}.crt"],
                         capture_output=True, text=True, check=True).stdout
    if not path.exists() or path.read_text() != pem:
        path.write_text(pem)
    return path


class _LoopbackTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        request.extensions = {**request.extensions, "sni_hostname": host}
        request.url = request.url.copy_with(host="127.0.0.1")
        request.headers["Host"] = f"{host}:{request.url.port}" if request.url.port not in (None, 443) else host
        return super().handle_request(request)


def http_client(vhost: str, timeout: float = 600.0, **kwargs) -> httpx.Client:
    """An httpx client whose requests to https://<vhost>:8443 go to the sandbox's nginx."""
    ctx = ssl.create_default_context(cafile=str(certificate(vhost)))
    return httpx.Client(transport=_LoopbackTransport(verify=ctx), timeout=timeout, **kwargs)


def base_url(vhost: str) -> str:
    return f"https://{vhost}:{HTTPS_PORT}"


def requests_session(vhost: str):
    """A requests.Session whose https://<vhost>:8443 URLs go to the sandbox's nginx."""
    import requests
    from requests.adapters import HTTPAdapter

    ca = str(certificate(vhost))

    class Loopback(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["server_hostname"] = vhost
            kwargs["assert_hostname"] = vhost
            super().init_poolmanager(*args, **kwargs)

        def send(self, request, **kwargs):
            request.headers["Host"] = f"{vhost}:{HTTPS_PORT}"
            request.url = request.url.replace(f"://{vhost}:", "://127.0.0.1:", 1)
            kwargs["verify"] = ca
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount(f"https://{vhost}:", Loopback())
    return session
