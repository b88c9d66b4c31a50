"""Taking over srv759970's twin (`make sandbox-brownfield`) over real SSH, as the first real run on
the live host would: the dry run first, then the takeover keeping the host's own Node proxy
(autostart_install=False), then the default deploy that replaces it, then a run with nothing to do.

Run by `make test-e2e` after the fresh-host tests (one sandbox at a time on the same ports): it
removes the fresh sandbox and builds the brownfield one from scratch (BROWNFIELD_REUSE=1 keeps a
running, already seeded one while developing; BROWNFIELD_KEEP=1 leaves it running afterwards).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from stages.nginx_conf import duplicates, parse_dump

from .conftest import PYINFRA, REPO, STATE, Run

pytestmark = pytest.mark.sandbox

NAME = os.environ.get("SANDBOX_NAME", "whisper-brownfield")
SSH_PORT = os.environ.get("SANDBOX_SSH_PORT", "2222")
HTTPS_PORT = int(os.environ.get("SANDBOX_HTTPS_PORT", "8443"))
HTTP_PORT = int(os.environ.get("SANDBOX_HTTP_PORT", "8080"))
DOMAIN = "srv759970.hstgr.cloud"
OURS = [f"whisper.{DOMAIN}", f"whisperx.{DOMAIN}"]
MONITOR = f"monitor.{DOMAIN}"   # the monitoring page's vhost (monitoring_enabled, the default)
PORTAL, BLOG = f"portal.{DOMAIN}", f"blog.{DOMAIN}"
# what a takeover must leave byte-for-byte: the other tenants' files
TENANT_FILES = [
    "/etc/nginx/nginx.conf", "/etc/nginx/sites-available/portal", "/etc/nginx/sites-available/blog",
    "/etc/nginx/sites-enabled/portal", "/etc/nginx/sites-enabled/blog", "/etc/nginx/snippets/basic-auth.conf",
    f"/etc/letsencrypt/live/{PORTAL}/fullchain.pem", f"/etc/letsencrypt/live/{PORTAL}/privkey.pem",
    f"/etc/letsencrypt/live/{BLOG}/fullchain.pem", f"/etc/letsencrypt/renewal/{PORTAL}.conf",
    "/opt/blog/docker-compose.yml", "/var/www/portal/index.html",
]


def ssh(command: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-i", str(STATE / "id_ed25519"), "-p", SSH_PORT, "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ssh {command!r} failed: {proc.stdout}{proc.stderr}")
    return proc


def pyinfra(*args: str, env: dict | None = None, check: bool = True) -> Run:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WHISPER_API_KEY",
                                                                   "WHISPER_BASIC_AUTH_USER", "WHISPER_BASIC_AUTH_PASSWORD")}
    proc = subprocess.run(PYINFRA + list(args), cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env={**environ, "DEPLOY_TARGET": "brownfield", **(env or {})})
    run = Run(proc.returncode, proc.stdout + proc.stderr, proc.stdout)
    assert proc.returncode == 0 or not check, f"pyinfra {' '.join(args)} failed ({proc.returncode}):\n{run.output[-6000:]}"
    return run


def env_file(name: str) -> dict[str, str]:
    out = {}
    for line in (STATE / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def snapshot() -> str:
    """Every file, link, mode and owner under what a deploy may touch, their checksums, the
    containers and images: equal snapshots mean a byte-identical host."""
    return ssh(
        "find /etc/nginx /etc/letsencrypt /opt /etc/systemd/system /var/backups /var/lib/whisper-platform -xdev "
        "\\( -type f -o -type l -o -type d \\) -printf '%p %m %u %g %l\\n' 2>/dev/null | sort; "
        "find /etc/nginx /etc/letsencrypt /opt /etc/systemd/system -xdev -type f -exec sha256sum {} + | sort; "
        "docker ps -a --format '{{.Names}} {{.Image}} {{.ID}} {{.State}}' | sort; "
        "docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort"
    ).stdout


def tenant_state() -> dict:
    sums = ssh("sha256sum " + " ".join(TENANT_FILES) + "; readlink /etc/nginx/sites-enabled/portal "
               "/etc/nginx/sites-enabled/blog").stdout
    htpasswd = [line for line in ssh("cat /etc/nginx/.htpasswd").stdout.splitlines() if not line.startswith("whisper:")]
    config = ssh("cat /opt/docker-autostart/config.json").stdout
    blog_entry = re.search(r'"blog\.srv759970\.hstgr\.cloud":\s*\{[^}]*\}', config).group(0)
    images = ssh("docker image inspect -f '{{.Id}}' tenant/blog:1 fedirz/faster-whisper-server:latest-cpu "
                 "whisperx-whisperx").stdout
    return {"files": sums, "htpasswd": htpasswd, "blog_entry": blog_entry, "images": images}


def token_digest() -> str:
    return ssh("grep '^HF_TOKEN=' /opt/whisperx/.env | sha256sum").stdout.split()[0]


def https_get(name: str, path: str = "/", headers: dict | None = None, timeout: float = 5) -> tuple[int, dict, bytes]:
    """One HTTPS request to 127.0.0.1:HTTPS_PORT with the vhost's name in SNI and Host. The
    sandbox's certificates are self-signed stand-ins: this checks routing, not trust."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            lines = [f"GET {path} HTTP/1.1", f"Host: {name}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body


def served_name(name: str) -> str:
    """The subject CN of the certificate nginx presents for this name."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", HTTPS_PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem, capture_output=True, text=True).stdout
    return out.strip().rsplit("=", 1)[-1].strip()


class Probe(threading.Thread):
    """A foreign vhost, asked again and again while a deploy runs: bounded in time and count."""

    def __init__(self, name: str):
        super().__init__(daemon=True)
        self.name, self.results, self.stop = name, [], threading.Event()

    def run(self):
        deadline = time.monotonic() + 1800
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.results) < 20000:
            try:
                status, _, body = https_get(self.name)
                self.results.append((status, b"portal" in body))
            except OSError as exc:
                self.results.append((0, str(exc)))
            time.sleep(0.1)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)

    def failures(self):
        return [r for r in self.results if r != (200, True)]


@pytest.fixture(scope="module")
def brownfield():
    reuse = os.environ.get("BROWNFIELD_REUSE") == "1"
    if not reuse:
        # one sandbox at a time on the same ports: a fresh sandbox still holding them goes first
        fresh = os.environ.get("FRESH_SANDBOX_NAME", "whisper-sandbox")
        ports = subprocess.run(["docker", "port", fresh, "22"], capture_output=True, text=True).stdout
        if re.search(rf":{SSH_PORT}$", ports, re.M):
            subprocess.run(["bash", "sandbox/down.sh"], cwd=REPO, check=True, capture_output=True,
                           env={**os.environ, "SANDBOX_NAME": fresh})
        subprocess.run(["bash", "sandbox/brownfield/down.sh"], cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, "SANDBOX_NAME": NAME})
    subprocess.run(["bash", "sandbox/brownfield/up.sh"], cwd=REPO, check=True, env={**os.environ, "SANDBOX_NAME": NAME})
    state = {"secrets": env_file("brownfield-secrets.env"), "tenant": env_file("brownfield-tenant.env")}
    yield state
    if os.environ.get("BROWNFIELD_KEEP") != "1":
        subprocess.run(["bash", "sandbox/brownfield/down.sh"], cwd=REPO, capture_output=True,
                       env={**os.environ, "SANDBOX_NAME": NAME})


@pytest.fixture(scope="module")
def before(brownfield):
    """The hand-made host as seeded: answers through its own vhosts, its token, its tenants."""
    tenant = brownfield["tenant"]
    auth = "Basic " + __import__("base64").b64encode(f"{tenant['TENANT_USER']}:{tenant['TENANT_PASSWORD']}".encode()).decode()
    status, _, body = https_get(OURS[0], headers={"Authorization": auth})
    assert (status, body.strip()) == (200, b"hand-made faster-whisper")  # the runbook's vhost and container
    return {"snapshot": snapshot(), "tenant": tenant_state(), "token": token_digest(),
            "node_unit": ssh("sha256sum /etc/systemd/system/docker-autostart.service").stdout,
            "certs": ssh(f"sha256sum /etc/letsencrypt/live/{OURS[0]}/fullchain.pem "
                         f"/etc/letsencrypt/live/{OURS[1]}/fullchain.pem").stdout,
            "auth": auth}


@pytest.fixture(scope="module")
def dry(before):
    run = pyinfra("--dry", "--diff")
    return run, snapshot()


@pytest.fixture(scope="module")
def takeover(dry, brownfield):
    """The first real run, keeping the host's Node proxy (autostart_install=False), HF_TOKEN absent."""
    with Probe(PORTAL) as probe:
        started = time.monotonic()
        run = pyinfra("-y", "-v", "--data", "autostart_install=False")
    return {"run": run, "probe": probe, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def replaced(takeover):
    """Then the default deploy: our autostart proxy replaces the Node one."""
    with Probe(PORTAL) as probe:
        run = pyinfra("-y", "--diff")
    return {"run": run, "probe": probe}


def test_dry_run_lists_the_takeover_and_changes_nothing(before, dry, brownfield):
    run, after = dry
    out = run.output
    for line in ("Will disable /etc/nginx/sites-enabled/whisper:", "Will disable /etc/nginx/sites-enabled/whisperx:",
                 "replace the hand-made container faster-whisper", "replace the hand-made container whisperx",
                 "keep the hand-made project files", "kept from the host: HF_TOKEN",
                 f"Will create /etc/nginx/sites-available/{OURS[0]}", "Will modify /opt/docker-autostart/config.json"):
        assert line in out, line
    # valid certificates are reused: no certbot run planned
    assert "Let's Encrypt certificate for" not in out and "Renew the expiring certificate" not in out
    assert after == before["snapshot"]


def secret_values(brownfield) -> list[str]:
    token = ssh("sed -n 's/^HF_TOKEN=//p' /opt/whisperx/.env").stdout.strip()
    assert token.startswith("hf_fake")
    return [token, brownfield["secrets"]["WHISPER_BASIC_AUTH_PASSWORD"], brownfield["secrets"]["WHISPER_API_KEY"],
            brownfield["tenant"]["TENANT_PASSWORD"]]


def test_takeover_keeps_foreign_sites_answering_and_converges(before, takeover, brownfield):
    probe = takeover["probe"]
    assert len(probe.results) > 20 and probe.failures() == [], probe.failures()[:5]
    assert before["tenant"] == tenant_state()  # vhosts, certs, htpasswd lines, config.json entry, images


def test_hf_token_survives_a_deploy_without_it(before, takeover):
    assert token_digest() == before["token"]
    assert ssh("stat -c '%a %U' /opt/whisperx/.env").stdout.split() == ["600", "root"]
    assert takeover["run"].output.count("kept from the host: HF_TOKEN") >= 1


def test_one_block_per_name_and_no_conflict_warning(takeover):
    dump = ssh("nginx -T 2>/dev/null").stdout
    blocks = parse_dump(dump)
    assert duplicates(blocks, OURS, [80, 443]) == {}
    for name in OURS:
        assert len([b for b in blocks if name in b["names"] and 443 in b["ports"]]) == 1
    assert "conflicting server name" not in ssh("nginx -t 2>&1").stdout
    # the hand-made vhosts: disabled, kept in a backup folder with a restore script, logged
    assert ssh("ls /etc/nginx/sites-enabled").stdout.split() == sorted(
        ["blog", "portal", *(site for name in [*OURS, MONITOR] for site in (name, f"{name}-http"))])
    assert ssh("test -f /etc/nginx/sites-available/whisper && test -f /etc/nginx/sites-available/whisperx").returncode == 0
    kept = ssh("cd /var/backups/whisper-platform/nginx && ls -d */etc/nginx/sites-enabled/whisper "
               "*/etc/nginx/sites-enabled/whisperx */restore.sh").stdout.split()
    assert len(kept) == 3
    assert "disabled /etc/nginx/sites-enabled/whisperx" in ssh("cat /var/backups/whisper-platform/nginx/changes.log").stdout
    assert ssh("test -f /var/backups/whisper-platform/projects/whisperx/Dockerfile").returncode == 0


def test_our_vhosts_serve_with_the_reused_certificates(before, takeover, brownfield):
    assert ssh(f"sha256sum /etc/letsencrypt/live/{OURS[0]}/fullchain.pem "
               f"/etc/letsencrypt/live/{OURS[1]}/fullchain.pem").stdout == before["certs"]
    assert served_name(OURS[0]) == OURS[0] and served_name(PORTAL) == PORTAL
    assert ssh("ls /etc/letsencrypt/renewal-hooks/deploy/").stdout.split() == ["whisper-platform-reload-nginx.sh"]
    # the port-80 redirect names the vhost, whatever Host the request carried
    head = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "-H", f"Host: {OURS[1]}",
                           f"http://127.0.0.1:{HTTP_PORT}/docs?x=1"], capture_output=True, text=True).stdout
    assert " 308 " in head.splitlines()[0] and f"location: https://{OURS[1]}/docs?x=1" in head.lower()
    status, _, _ = https_get(OURS[0], "/v1/models")
    assert status == 401  # ours: basic auth or API key


def test_runbook_containers_replaced_their_images_kept(takeover):
    ps = ssh("docker ps -a --format '{{.Names}} {{.Image}}'").stdout
    images = dict(line.split(" ", 1) for line in ps.splitlines())
    assert images["faster-whisper"].startswith("whisper-faster:src-")  # it was running: ours runs now
    assert ssh("docker inspect -f '{{.State.Running}}' faster-whisper").stdout.strip() == "true"
    assert images.get("whisperx", "whisperx:src-").startswith("whisperx:src-")
    assert ssh("docker image inspect fedirz/faster-whisper-server:latest-cpu whisperx-whisperx").returncode == 0


def test_autostart_install_false_keeps_the_node_proxy(before, takeover):
    assert ssh("sha256sum /etc/systemd/system/docker-autostart.service").stdout == before["node_unit"]
    assert "node" in ssh("systemctl show -p ExecStart docker-autostart").stdout
    assert ssh("systemctl is-active docker-autostart").stdout.strip() == "active"
    config = json.loads(ssh("cat /opt/docker-autostart/config.json").stdout)
    assert config["services"][OURS[0]]["readinessPath"] == "/health"


def test_default_deploy_replaces_the_node_proxy_and_tenants_start_through_ours(before, replaced, brownfield):
    assert replaced["probe"].failures() == [] and replaced["probe"].results
    assert "docker_autostart" in ssh("systemctl show -p ExecStart docker-autostart").stdout
    # the Node proxy's unit is kept for a rollback, its code did not move
    assert ssh("grep -q node /var/backups/whisper-platform/projects/autostart/docker-autostart.service && "
               "test -f /opt/docker-autostart/server.js").returncode == 0
    assert before["tenant"] == tenant_state()
    ssh("docker stop blog >/dev/null 2>&1 || true")
    status, _, body = https_get(BLOG, headers={"Authorization": before["auth"]}, timeout=120)
    assert (status, body.strip()) == (200, b"hand-made blog")
    key = brownfield["secrets"]["WHISPER_API_KEY"]
    status, _, body = https_get(OURS[0], "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=300)
    assert status == 200, body[:300]


def test_second_run_changes_nothing(replaced):
    again = pyinfra("-y", "--json")
    assert again.changed() == 0, again.stdout[-3000:]


def test_failed_image_build_leaves_the_service_on_its_image(replaced, brownfield):
    """A base image that does not exist: the build fails, the deploy stops before the compose step,
    the running container keeps its image."""
    key = brownfield["secrets"]["WHISPER_API_KEY"]
    https_get(OURS[0], "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=300)  # make sure it runs
    before = ssh("docker inspect -f '{{.Config.Image}} {{.State.Running}}' faster-whisper").stdout
    assert before.split()[1] == "true"
    failed = pyinfra("-y", "--data", "base_image=local/missing:1", check=False)
    assert failed.returncode != 0 and "Build image" in failed.output
    assert ssh("docker inspect -f '{{.Config.Image}} {{.State.Running}}' faster-whisper").stdout == before


# last: it needs every run above, and the replacing run must come after the Node proxy checks
def test_no_secret_in_any_output(dry, takeover, replaced, brownfield):
    for out in (dry[0].output, takeover["run"].output, replaced["run"].output):
        for value in secret_values(brownfield):
            assert value not in out
