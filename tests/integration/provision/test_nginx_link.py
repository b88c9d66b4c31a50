"""nginx's link server (templates/nginx/link.conf.j2) in a real nginx on 127.0.0.1, with the link's real PKI
(stages/link.py): a current worker host's certificate reaches the service's job interface; a certificate of the
same CA whose host was removed from the inventory (no longer pinned) is refused, as is a client without one."""
from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import pytest

from support.local_http import Receiver
from support.private_nginx import NGINX, start_nginx
from stages import link
from stages.web import _render
pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (make docker installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def link_nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("nginx-link")
    pki = tmp_path_factory.mktemp("pki")
    cert, key = link.issue(pki, "front", server_address="127.0.0.1")
    (root / "server.crt").write_text(cert)
    (root / "server.key").write_text(key.reveal())
    shutil.copy(pki / "ca.crt", root / "ca.crt")
    kept, removed = link.issue(pki, "w1")[0], link.issue(pki, "w-gone")[0]
    service = Receiver("127.0.0.1")
    port = _free_port()
    conf = _render("link.conf.j2", link_address="127.0.0.1", link_https_port=port, link_dir=str(root),
                   services=[("faster", service.port)], pinned=[("w1", link.cert_fingerprint(kept))])
    proc = start_nginx(root, conf, port)
    yield port, pki, service, removed
    proc.terminate()
    proc.wait(5)
    service.close()


def _get(port: int, pki: Path, client: str | None, path: str) -> int:
    import http.client

    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=b"{}", headers={"Authorization": "Bearer t"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_only_pinned_worker_hosts_reach_the_job_interface(link_nginx):
    port, pki, service, _ = link_nginx
    assert _get(port, pki, "w1", "/faster/internal/link/next") == 200
    assert service.requests[-1].target == "/internal/link/next"   # straight to the service, prefix dropped
    before = len(service.requests)
    assert _get(port, pki, "w-gone", "/faster/internal/link/next") == 403   # same CA, removed from the inventory
    assert _get(port, pki, None, "/faster/internal/link/next") == 400       # no certificate at all
    assert _get(port, pki, "w1", "/faster/v1/jobs") == 404                  # nothing but the job interface
    assert _get(port, pki, "w1", "/whisperx/internal/link/next") == 404     # a service this front does not list
    assert len(service.requests) == before
