"""A fresh sandbox host provisioned over real SSH, checked as an operator would."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from .conftest import FOREIGN_CONFIG, FOREIGN_ENTRY, HTTP_PORT, REPO, curl, host_snapshot, pyinfra, ssh

pytestmark = pytest.mark.sandbox

FASTER = "whisper.sandbox.test"
WHISPERX = "whisperx.sandbox.test"
PORTAL = "https://portal.sandbox.test"


def _auth(deployed):
    s = deployed["secrets"]
    return f"{s['WHISPER_BASIC_AUTH_USER']}:{s['WHISPER_BASIC_AUTH_PASSWORD']}"


def test_second_run_changes_nothing(deployed):
    assert pyinfra("-y", "--json").changed() == 0


def test_existing_autostart_entries_kept_byte_for_byte(deployed):
    # the fresh host of the fixture had this config before the first deploy; set it again
    # (as a live host would have it, without our entries) and deploy
    ssh(f"cat > /opt/docker-autostart/config.json <<'EOF'\n{FOREIGN_CONFIG}EOF")
    pyinfra("-y")
    config = ssh("cat /opt/docker-autostart/config.json").stdout
    assert FOREIGN_ENTRY in config
    assert '"whisper.sandbox.test"' in config and '"whisperx.sandbox.test"' in config


def test_host_state(deployed):
    assert ssh("nginx -t").returncode == 0
    for env in ("/opt/whisper-faster/.env", "/opt/whisperx/.env"):
        assert ssh(f"stat -c '%a %U %G' {env}").stdout.split() == ["600", "root", "root"]
    assert ssh("stat -c '%a %U' /etc/nginx/conf.d/whisper-platform-auth.conf").stdout.split() == ["600", "root"]
    assert ssh("systemctl is-active docker-autostart").stdout.strip() == "active"


def test_nginx_auth_cors_redirect(deployed):
    # no credentials, wrong credentials: 401, and the service is not woken for them
    assert curl(FASTER, "/v1/models")["status"] == 401
    assert curl(FASTER, "/v1/models", "-u", "whisper:wrong")["status"] == 401
    assert curl(FASTER, "/v1/models", "-H", "Authorization: Bearer not-a-key")["status"] == 401
    # the portal's preflight: 204 with CORS headers, no credentials needed
    pre = curl(FASTER, "/v1/audio/transcriptions", "-X", "OPTIONS", "-H", f"Origin: {PORTAL}",
               "-H", "Access-Control-Request-Method: POST")
    assert pre["status"] == 204
    assert pre["headers"]["access-control-allow-origin"] == PORTAL
    assert "POST" in pre["headers"]["access-control-allow-methods"]
    other = curl(FASTER, "/v1/audio/transcriptions", "-X", "OPTIONS", "-H", "Origin: https://evil.example")
    assert "access-control-allow-origin" not in other["headers"]
    # a 401 still carries the CORS header for the portal (add_header ... always)
    denied = curl(FASTER, "/v1/models", "-H", f"Origin: {PORTAL}")
    assert denied["status"] == 401 and denied["headers"]["access-control-allow-origin"] == PORTAL
    # port 80 (8080 here) redirects to https, except the ACME webroot
    redirect = curl(FASTER, "/v1/models", port=HTTP_PORT, scheme="http")
    assert redirect["status"] == 308 and redirect["headers"]["location"].startswith(f"https://{FASTER}/")
    assert curl(FASTER, "/.well-known/acme-challenge/none", port=HTTP_PORT, scheme="http")["status"] == 404


def test_good_credentials_pass_through_and_ports_are_local(deployed):
    # basic auth or the API key: both reach the service (started on demand by the proxy)
    ok = curl(FASTER, "/health", "-u", _auth(deployed))
    assert ok["status"] == 200, ok
    key = deployed["secrets"]["WHISPER_API_KEY"]
    models = curl(FASTER, "/v1/models", "-H", f"Authorization: Bearer {key}", "-H", f"Origin: {PORTAL}")
    assert models["status"] == 200, models
    assert models["headers"]["access-control-allow-origin"] == PORTAL
    listening = ssh("ss -ltnH").stdout
    ports = {}
    for line in listening.splitlines():
        addr = line.split()[3]
        host, _, port = addr.rpartition(":")
        ports.setdefault(port, set()).add(host)
    for port in ("8001", "8890"):
        assert port in ports, listening
        assert ports[port] <= {"127.0.0.1"}, (port, ports[port])
    for port in ("8002",):
        assert ports.get(port, {"127.0.0.1"}) <= {"127.0.0.1"}


def test_secrets_never_in_output_or_repo(deployed, tmp_path):
    values = [v for k, v in deployed["secrets"].items() if k != "WHISPER_BASIC_AUTH_USER" and v]
    outputs = [deployed["first"].output]
    outputs.append(pyinfra("--dry", "--diff").output)
    outputs.append(pyinfra("-y", "-v").output)
    outputs.append(pyinfra("--dry", "--diff", "-vvv").output)
    # a run that does change the secret files (new password), with diff and verbose
    changed = pyinfra("-y", "--diff", "-vv", env={"WHISPER_BASIC_AUTH_PASSWORD": "rotated-" + values[0][:4] + "x9Q",
                                                   "WHISPER_API_KEY": "sk-rotated-test-key-1234"})
    outputs.append(changed.output)
    assert "Will update /opt/whisper-faster/.env (secret, contents not shown)" in changed.output
    outputs.append(pyinfra("-y").output)  # back to the sandbox's own secrets
    for value in values + ["sk-rotated-test-key-1234"]:
        for out in outputs:
            assert value not in out
    tracked = subprocess.run(["git", "grep", "-I", "-l", "-F", "-e", values[0], "-e", values[1]],
                             cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout == ""


def test_dry_diff_shows_exactly_the_affected_file_and_changes_nothing(deployed, tmp_path):
    before = host_snapshot()
    dry = pyinfra("--dry", "--diff", "--data", "cors_origin=https://portal.example.org")
    changed = re.findall(r"Will (?:modify|create) (\S+)", dry.output)
    assert changed == ["/etc/nginx/conf.d/whisper-platform.conf"], dry.output[-3000:]
    # the origin as an anchored regex map key (no map hash: nothing to size at http{} level)
    assert re.search(r'\+\s+"~\^https://portal\\\.example\\\.org\$" \$http_origin;', dry.output), dry.output[-3000:]
    assert host_snapshot() == before
    # the real run applies it, and the next one (back to the default) restores it
    pyinfra("-y", "--data", "cors_origin=https://portal.example.org")
    assert "portal\\.example\\.org" in ssh("cat /etc/nginx/conf.d/whisper-platform.conf").stdout
    pyinfra("-y")
    assert host_snapshot() == before


def test_body_limit(deployed):
    pyinfra("-y", "--data", "body_limit=1M")
    try:
        big = REPO / ".sandbox" / "two-megabytes.bin"
        big.write_bytes(b"\0" * (2 * 1024 * 1024))
        over = curl(FASTER, "/v1/audio/transcriptions", "-u", _auth(deployed), "-F", f"file=@{big}")
        assert over["status"] == 413
    finally:
        pyinfra("-y")


def test_killed_deploy_converges_on_rerun(deployed):
    # change something that makes the deploy work (an image source), kill it halfway
    marker = REPO / "images" / "faster" / "e2e-rebuild-marker.txt"
    marker.write_text(f"{time.time()}\n")
    try:
        proc = subprocess.Popen(["bash", "-c", "exec .venv/bin/pyinfra inventory.py deploy.py -y"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if "Build image whisper-faster" in line:
                time.sleep(5)
                break
        proc.kill()
        proc.wait()
        assert "Build image whisper-faster" in seen, seen[-3000:]
        pyinfra("-y")
        assert pyinfra("-y", "--json").changed() == 0
    finally:
        marker.unlink()
        pyinfra("-y")
