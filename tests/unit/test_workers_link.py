"""Worker hosts without a host: the inventory's groups, the link's PKI (real certificates, checked
with real TLS handshakes on the loopback), and the templates the worker and the front receive."""
from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from stages import link
from stages.settings import Platform, read_group_data
from stages.settings import WorkerHost

REPO = Path(__file__).resolve().parents[2]


def _inventory(env: dict) -> dict:
    code = ("import json, runpy; ns = runpy.run_path('inventory.py'); "
            "print(json.dumps({g: ns[g] for g in ('production', 'sandbox', 'brownfield', 'workers')}))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "DEPLOY_TARGET"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True,
                         text=True, check=True).stdout
    import json
    return json.loads(out)


def test_inventory_without_workers_is_the_single_host(tmp_path):
    inv = _inventory({})
    assert inv["workers"] == [] and [h[0] for h in inv["sandbox"]] == ["sandbox"]
    assert "link_address" not in inv["sandbox"][0][1]


def test_inventory_sandbox_workers_join_both_groups():
    state = REPO / ".sandbox"
    state.mkdir(exist_ok=True)
    had = (state / "link-address").read_text() if (state / "link-address").exists() else None
    (state / "link-address").write_text("10.9.8.7\n")
    try:
        inv = _inventory({"SANDBOX_WORKERS": "w1:2301,w2:2302"})
    finally:
        if had is None:
            (state / "link-address").unlink()
        else:
            (state / "link-address").write_text(had)
    assert [h[0] for h in inv["workers"]] == ["w1", "w2"]
    assert [h[1]["ssh_port"] for h in inv["workers"]] == [2301, 2302]
    assert inv["sandbox"][0][1]["link_address"] == "10.9.8.7"
    assert inv["sandbox"][1:] == ["w1", "w2"]   # the sandbox's settings (images, models) apply to them too


def _serve_once(server_ctx: ssl.SSLContext, port_holder: list, outcome: list) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port_holder.append(s.getsockname()[1])
        conn, _ = s.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome.append(tls.getpeercert()["subject"])
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            outcome.append(e)


def _handshake(folder: Path, client_cert: tuple[Path, Path] | None):
    ca_cert = folder / "ca.crt"
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(folder / "front.crt", folder / "front.key")
    sctx.load_verify_locations(ca_cert)
    sctx.verify_mode = ssl.CERT_REQUIRED   # what tls-auth-clients yes / ssl_verify_client on ask
    port, outcome = [], []
    t = threading.Thread(target=_serve_once, args=(sctx, port, outcome))
    t.start()
    while not port:
        pass
    cctx = ssl.create_default_context(cafile=str(ca_cert))
    if client_cert:
        cctx.load_cert_chain(*client_cert)
    try:
        with socket.create_connection(("127.0.0.1", port[0])) as raw, \
                cctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            data = tls.recv(2)
    except (ssl.SSLError, OSError) as e:
        data = e
    t.join(10)
    return data, outcome


def test_link_pki_mutual_tls(tmp_path):
    """The front's certificate names its link address; a worker's is accepted, no certificate is refused."""
    link.issue(tmp_path, "front", server_address="127.0.0.1")
    link.issue(tmp_path, "w1")
    assert oct(os.stat(tmp_path / "w1.key").st_mode & 0o777) == "0o600"
    data, outcome = _handshake(tmp_path, (tmp_path / "w1.crt", tmp_path / "w1.key"))
    assert data == b"ok" and ((("commonName", "w1"),),) == outcome[0]
    data, outcome = _handshake(tmp_path, None)
    assert not isinstance(outcome[0], tuple)   # the server refused the handshake without a client certificate


def test_link_pki_is_made_once_and_follows_the_address(tmp_path):
    first = link.issue(tmp_path, "front", server_address="10.0.0.1")[0]
    assert link.issue(tmp_path, "front", server_address="10.0.0.1")[0] == first
    assert link.issue(tmp_path, "front", server_address="10.0.0.2")[0] != first   # a new address, a new cert
    token = link.worker_token(tmp_path, "w1")
    assert link.worker_token(tmp_path, "w1").reveal() == token.reveal() and "***" in repr(token)
    assert oct(os.stat(tmp_path / "w1.link-token").st_mode & 0o777) == "0o600"
    assert link.token_hash(token) == hashlib.sha256(token.reveal().encode()).hexdigest()
    # the pinned fingerprint is nginx's $ssl_client_fingerprint: SHA-1 of the certificate, as openssl says it
    cert = link.issue(tmp_path, "w1")[0]
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1"], input=cert, capture_output=True,
                         text=True, check=True).stdout
    assert link.cert_fingerprint(cert) == out.strip().split("=", 1)[1].replace(":", "").lower()
    text = link.workers_file_text([("w1", "ab" * 32)])
    assert text.splitlines()[1:] == [f"w1 {'ab' * 32}"]


def _render(folder: str, name: str, **values) -> str:
    env = Environment(loader=FileSystemLoader(str(REPO / "templates" / folder)), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    return env.get_template(name).render(**values)


def test_worker_compose_renders(tmp_path):
    data = read_group_data("sandbox", "workers", worker_device="cuda")
    worker = WorkerHost.from_group_data(data)
    p = Platform.from_group_data(data, service_overrides_extra=worker.service_overrides(data))
    assert [s.key for s in p.services] == ["faster"]   # the worker host's services only
    svc = p.service("faster")
    assert svc.device == "cuda" and svc.compute_type == "float16" and svc.build_args["DEVICE"] == "cuda"
    from stages import gpu
    gpu.check_images(gpu.cuda_services(p))   # a cuda worker host builds the GPU image: the GPU stage accepts it
    text = _render("compose", "worker.yml.j2", svc=svc, image_tag="whisper-faster:src-x", concurrency=2,
                   timezone="UTC", hf_cache_dir="/hf", models_dir="/m", link_dir="/etc/l", link_address="10.0.0.1",
                   link_https_port=8444, worker_name="w1", jobs={"ttl": 60, "max_seconds": 60, "retries": 2},
                   body_limit_mb=500, logs={"max_size": "10m", "max_files": 3})
    doc = yaml.safe_load(text)
    assert sorted(doc["services"]) == ["faster-whisper-worker-1", "faster-whisper-worker-2"]
    w = doc["services"]["faster-whisper-worker-1"]
    assert w["restart"] == "unless-stopped" and w["init"] is True and w["network_mode"] == "host" and "ports" not in w
    assert w["logging"] == {"driver": "local", "options": {"max-size": "10m", "max-file": "3"}}
    env = w["environment"]
    assert env["STT_JOBS_FRONT_URL"] == "https://10.0.0.1:8444/faster" and env["STT_WORKER_NAME"] == "w1"
    # a worker host holds no Redis setting at all; its token is in the root-only .env only
    assert "REDIS" not in text and "STT_LINK_TOKEN" not in text
    assert w["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert env["STT_JOBS_DIR"].startswith("/tmp/stt/") and any(t.startswith("/tmp/stt:") for t in w["tmpfs"])


def test_front_link_config_binds_the_link_only_and_pins_the_workers():
    nginx = _render("nginx", "link.conf.j2", link_address="10.0.0.1", link_https_port=8444,
                    link_dir="/etc/nginx/whisper-platform-link", services=[("faster", 8001), ("whisperx", 8002)],
                    pinned=[("w1", "ab" * 20)])
    assert "listen 10.0.0.1:8444 ssl;" in nginx and "ssl_verify_client on;" in nginx
    assert f"{'ab' * 20} 1;" in nginx and "return 403;" in nginx
    assert "location /faster/internal/link/ {" in nginx and "proxy_pass http://127.0.0.1:8001/internal/link/;" in nginx
    assert "8890" not in nginx   # never through the autostart proxy: a worker host asking for work wakes nothing


class _Host:
    def __init__(self, name, **data):
        self.name, self.data = name, data


def test_the_front_runs_one_relay_per_worker_host_slot():
    hosts = [_Host("w1", worker_services=["faster"], worker_concurrency=2),
             _Host("w2", worker_services=["faster", "whisperx"], worker_concurrency=1)]
    assert link.relays("faster", hosts) == 3 and link.relays("whisperx", hosts) == 1 and link.relays("x", hosts) == 0
    from stages.compose_projects import compose_values

    p = Platform.from_group_data(read_group_data("sandbox"))
    svc = p.service("faster")
    doc = yaml.safe_load(_render("compose", "service.yml.j2", **{**compose_values(svc, p, relays=3),
                                                                  "image_tag": "whisper-faster:src-x"}))
    relay = doc["services"]["faster-whisper-relay"]
    assert relay["command"][-1] == "stt_common.jobs.relay" and relay["environment"]["STT_LINK_RELAYS"] == "3"
    assert relay["mem_limit"] == f"{128 + 96 * 3}m" and "ports" not in relay
    api = doc["services"]["faster-whisper"]
    assert api["environment"]["STT_LINK_WORKERS_FILE"] == "/link-workers/workers"
    assert "/etc/whisper-platform/link-workers:/link-workers:ro" in api["volumes"]
    none = yaml.safe_load(_render("compose", "service.yml.j2", **{**compose_values(svc, p, relays=0),
                                                                   "image_tag": "whisper-faster:src-x"}))
    assert "faster-whisper-relay" not in none["services"]


def test_worker_host_knobs_are_checked():
    from stages.settings import GroupDataError

    with pytest.raises(GroupDataError, match="worker_services.*'nope'"):
        WorkerHost.from_group_data(read_group_data("sandbox", "workers", worker_services=["nope"]))
    with pytest.raises(GroupDataError, match="worker_concurrency"):
        WorkerHost.from_group_data(read_group_data("sandbox", "workers", worker_concurrency=0))
    with pytest.raises(GroupDataError, match="worker_device"):
        WorkerHost.from_group_data(read_group_data("sandbox", "workers", worker_device="tpu"))
    data = read_group_data("sandbox", "workers", worker_services=["faster", "whisperx"], worker_model="/models/x")
    w = WorkerHost.from_group_data(data)
    p = Platform.from_group_data(data, service_overrides_extra=w.service_overrides(data))
    assert {s.key: (s.model, s.compute_type) for s in p.services} == {
        "faster": ("/models/x", "int8"), "whisperx": ("/models/x", "int8")}
