"""The end-to-end tier: one fresh sandbox host per run, deployed once over real SSH.

Set SANDBOX_REUSE=1 to keep an already running sandbox (faster while developing);
by default the sandbox is removed and rebuilt so the first deploy is a fresh-host deploy.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.client import secrets

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".sandbox"
PYINFRA = [str(REPO / ".venv/bin/pyinfra"), "inventory.py", "deploy.py"]
HTTPS_PORT = int(os.environ.get("SANDBOX_HTTPS_PORT", "8443"))
HTTP_PORT = int(os.environ.get("SANDBOX_HTTP_PORT", "8080"))
SANDBOX = os.environ.get("SANDBOX_NAME", "whisper-sandbox")
# what the tests keep for a person to look at (screenshots of the pages they drive)
ARTEFACTS = Path(os.environ.get("E2E_ARTEFACTS", REPO / ".sandbox" / "artefacts"))

# a config.json as a live host has it, with another service in its own formatting: the
# deploy must keep it byte-for-byte
FOREIGN_ENTRY = '''"blog.sandbox.test":   {"name":"Blog (not ours)","composeDir":"/opt/blog","proxyPort":9000,
        "blocking":false,"containers":["blog"]}'''
FOREIGN_CONFIG = '{\n    "services": {\n        ' + FOREIGN_ENTRY + '\n    }\n}\n'


# modules that destroy the shared sandbox run after every other one, in this order: the rebuild from a backup
# (test_rebuild.py) leaves a rebuilt sandbox behind, the teardown removes it
LAST = ("test_rebuild.py", "test_teardown.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


@dataclass
class Run:
    returncode: int
    output: str  # stdout and stderr
    stdout: str = ""

    def json(self):
        return json.loads(self.stdout)

    def changed(self) -> int:
        """Operations that changed something, from a `--json` run."""
        return self.json()["results"]["totals"]["success"]


def pyinfra(*args: str, env: dict | None = None, timeout: int = 3600, check: bool = True) -> Run:
    proc = subprocess.run(
        PYINFRA + list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "DEPLOY_TARGET": "sandbox", **(env or {})},
    )
    run = Run(proc.returncode, proc.stdout + proc.stderr, proc.stdout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pyinfra {' '.join(args)} failed ({proc.returncode}):\n{run.output[-6000:]}")
    return run


def ssh(command: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command on the sandbox host, over real SSH."""
    proc = subprocess.run(
        ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-i", str(STATE / "id_ed25519"), "-p", os.environ.get("SANDBOX_SSH_PORT", "2222"), "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ssh {command!r} failed: {proc.stdout}{proc.stderr}")
    return proc


_fetched: set[str] = set()


def curl(host: str, path: str = "/", *args: str, port: int = HTTPS_PORT, scheme: str = "https") -> dict:
    """One request through nginx on 127.0.0.1 with the vhost's name (SNI and Host)."""
    ca = STATE / f"{host}.crt"
    if scheme == "https" and host not in _fetched:
        # once per test run: a re-created sandbox has new certificates
        ca.write_text(ssh(f"cat /etc/ssl/whisper-platform/{host}.crt").stdout)
        _fetched.add(host)
    cmd = ["curl", "-sS", "-o", "/dev/stderr", "-D", "-", "--max-time", "600",
           "--resolve", f"{host}:{port}:127.0.0.1", f"{scheme}://{host}:{port}{path}", *args]
    if scheme == "https":
        cmd[1:1] = ["--cacert", str(ca)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=700)
    head, body = proc.stdout, proc.stderr
    blocks = [b for b in head.replace("\r", "").split("\n\n") if b.strip()]
    last = blocks[-1].splitlines() if blocks else ["HTTP/1.1 000"]
    headers = {}
    for line in last[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return {"status": int(last[0].split()[1]), "headers": headers, "body": body}


# a meeting as users send it: different sentences with pauses between them (tests/e2e/test_jobs.py reads it twice in
# two voices; test_day_two.py its first half)
AGENDA = (
    "good morning everyone and thank you for joining the weekly planning meeting",
    "the first item on the agenda is the new office in the city centre",
    "the lease was signed last week and the keys arrive on monday",
    "we still need desks chairs and a good coffee machine for the kitchen",
    "the second item is the budget for the next quarter",
    "sales grew by a small margin and the costs stayed under control",
    "marketing would like more money for the spring campaign",
    "we agreed to review that request at the end of the month",
    "the third item is the hiring plan for the support team",
    "two new people will start in january and one more in march",
    "please send your questions to the team before friday",
    "that is all for today and the next meeting starts at ten",
)


def speech(folder, name: str, sentences, voice: str = "en-us", pause: float = 1.0) -> str:
    """The sentences spoken by espeak-ng, each followed by `pause` seconds of silence, as one wav in `folder`."""
    parts = []
    for i, sentence in enumerate(sentences):
        part = folder / f"{name}-{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(part), sentence], check=True)
        subprocess.run(["sox", str(part), str(part.with_suffix(".pad.wav")), "pad", "0", str(pause)], check=True)
        parts.append(str(part.with_suffix(".pad.wav")))
    out = folder / f"{name}.wav"
    subprocess.run(["sox", *parts, str(out)], check=True)
    return str(out)


def host_snapshot() -> str:
    """Checksums, modes and owners of everything the deploy manages on the host."""
    return ssh(
        "find /etc/nginx /opt/whisper-faster /opt/whisperx /opt/docker-autostart /opt/whisper-platform "
        "/etc/systemd/system/docker-autostart.service /var/lib/whisper-platform/models -xdev "
        "\\( -type f -o -type l \\) -printf '%p %m %u %g %l\\n' 2>/dev/null | sort; "
        "find /etc/nginx /opt/whisper-faster /opt/whisperx /opt/docker-autostart -type f -exec sha256sum {} + | sort; "
        "docker images --format '{{.Repository}}:{{.Tag}}' | sort"
    ).stdout


@pytest.fixture(scope="session")
def deployed():
    """A sandbox host that received one full deploy from fresh."""
    if os.environ.get("SANDBOX_REUSE") != "1":
        subprocess.run(["bash", "sandbox/down.sh"], cwd=REPO, check=True)
    subprocess.run(["bash", "sandbox/up.sh"], cwd=REPO, check=True)
    if os.environ.get("SANDBOX_REUSE") != "1":
        # the host already serves another service through the autostart proxy
        ssh(f"mkdir -p /opt/docker-autostart && cat > /opt/docker-autostart/config.json <<'EOF'\n{FOREIGN_CONFIG}EOF")
    started = time.monotonic()
    first = pyinfra("-y")
    return {"first": first, "seconds": time.monotonic() - started, "secrets": secrets()}
