"""Fixtures for the autostart proxy's integration tests: one small service image per session
(stdlib http.server, built FROM local/python:3.11-slim), one compose project per test service
(containers named autostart-test-*, ports on 127.0.0.1 in 18800-18899), and the proxy run as
a real subprocess on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[3]
APP_DIR = Path(__file__).resolve().parent / "app"
AUTOSTART_DIR = REPO / "autostart"
PORTS = iter(range(18800, 18900))
PREFIX = "autostart-test-"

pytestmark = pytest.mark.docker


def _docker_ok() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on this machine (make docker installs it)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "docker engine not answering (run `make docker`)"
    return None


def compose_cmd() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in 18800-18899")


def container_state(name: str) -> str:
    res = subprocess.run(["docker", "inspect", "--type", "container", "--format", "{{.State.Status}}", name],
                         capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else "missing"


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proxy_python() -> str:
    """Debian's python3 with python3-aiohttp 3.8 and python3-prometheus-client 0.16 (what the host runs) when
    present, else this venv."""
    override = os.environ.get("AUTOSTART_TEST_PYTHON")
    if override:
        return override
    for candidate in ("/usr/bin/python3",):
        if Path(candidate).exists() and subprocess.run(
                [candidate, "-c", "import aiohttp, prometheus_client"], capture_output=True).returncode == 0:
            return candidate
    return sys.executable


@pytest.fixture(scope="session")
def app_image():
    reason = _docker_ok()
    if reason:
        pytest.skip(reason)
    src = hashlib.sha256((APP_DIR / "app.py").read_bytes() + (APP_DIR / "Dockerfile").read_bytes()).hexdigest()
    tag = f"{PREFIX}app:{src[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        if subprocess.run(["docker", "image", "inspect", "local/python:3.11-slim"],
                          capture_output=True).returncode != 0:
            subprocess.run(["bash", str(REPO / "sandbox/base-images.sh")], check=True)
        subprocess.run(["docker", "build", "-q", "-t", tag, str(APP_DIR)], check=True, capture_output=True)
    return tag


class Service:
    """One compose project in a tmp folder, with the config entry the proxy needs."""

    def __init__(self, root: Path, image: str, *, health_delay: float = 0, blocking: bool = True,
                 idle_timeout: float | None = None, max_wait: float | None = None,
                 compose_text: str | None = None, health_permanent: str = "", wake_path: str | None = None,
                 listen_delay: float = 0):
        self.id = uuid.uuid4().hex[:8]
        self.entry_image = image
        self.project = f"{PREFIX}{self.id}"
        self.container = f"{PREFIX}{self.id}"
        self.host = f"svc-{self.id}.autostart.test"
        self.port = free_port()
        self.dir = root / self.project
        self.dir.mkdir(parents=True)
        (self.dir / ".env").write_text(f"COMPOSE_PROJECT_NAME={self.project}\n")
        (self.dir / "docker-compose.yml").write_text(compose_text or f"""\
version: "2.4"
services:
  app:
    image: {image}
    container_name: {self.container}
    ports: ["127.0.0.1:{self.port}:8000"]
    environment:
      HEALTH_DELAY: "{health_delay}"
      HEALTH_PERMANENT: "{health_permanent}"
      LISTEN_DELAY: "{listen_delay}"
    stop_grace_period: 2s
""")
        self.entry = {"name": f"test service {self.id}", "composeDir": str(self.dir), "proxyPort": self.port,
                      "blocking": blocking, "containers": [self.container],
                      # as the deploy writes our entries (an entry without it is ready on any answer)
                      "readinessPath": "/health"}
        if idle_timeout is not None:
            self.entry["idleTimeout"] = idle_timeout
        if max_wait is not None:
            self.entry["maxWait"] = max_wait
        if wake_path is not None:
            self.entry["wakePath"] = wake_path

    def state(self) -> str:
        return container_state(self.container)

    def down(self) -> None:
        subprocess.run(compose_cmd() + ["down", "-v", "-t", "1", "--remove-orphans"], cwd=self.dir,
                       capture_output=True)
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True)


@pytest.fixture
def make_service(app_image, tmp_path):
    made = []

    def make(**kw) -> Service:
        svc = Service(tmp_path / "compose", app_image, **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.down()




class Proxy:
    def __init__(self, tmp: Path, services, *, poll_interval: float = 0.3, extra_args=()):
        self.port = free_port()
        self.config = tmp / f"config-{self.port}.json"
        self.write_config(services)
        self.log_path = tmp / f"proxy-{self.port}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(AUTOSTART_DIR), PYTHONUNBUFFERED="1")
        self.python = proxy_python()
        self.proc = subprocess.Popen(
            [self.python, "-m", "docker_autostart", "--config", str(self.config),
             "--listen", f"127.0.0.1:{self.port}", "--poll-interval", str(poll_interval),
             "--idle-check-interval", "0.3", *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp))
        self.base = f"http://127.0.0.1:{self.port}"

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited: {self.log()}")
            try:
                return requests.get(self.base + "/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(up, 15, what="the proxy's /health")

    def write_config(self, services, extra=None) -> None:
        data = {"services": {s.host: s.entry for s in services}, "logLevel": "ignored-by-us"}
        data.update(extra or {})
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.config)

    def request(self, method, host, path, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if host is not None:
            headers["Host"] = host
        kw.setdefault("timeout", 120)
        return requests.request(method, self.base + path, headers=headers, **kw)

    def get(self, host, path="/", **kw) -> requests.Response:
        return self.request("GET", host, path, **kw)

    def health(self) -> dict:
        return requests.get(self.base + "/health", timeout=5).json()

    def metrics(self) -> dict:
        """{(sample name, frozenset of its labels): value}, parsed from /metrics as Prometheus parses it."""
        text = requests.get(self.base + "/metrics", timeout=5).text
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels) -> float:
        return self.metrics().get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> str:
        return wait_for(lambda: text in self.log() and self.log(), timeout, what=f"log line {text!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_proxy(tmp_path):
    proxies = []

    def start(services, **kw) -> Proxy:
        p = Proxy(tmp_path, services, **kw)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.stop()
        sys.stderr.write(f"--- proxy log ({p.python}) ---\n{p.log()}\n")
