"""The monitoring stack on the sandbox host: every listener on loopback, the monitoring page through nginx in
headless Chromium (its screenshot kept as a test artefact), scrapes that never start a service, and alerts that
reach a receiver: Redis stopped and started, a job worker killed while a job waits and started again.

The sandbox group sets short scrape, evaluation and grouping intervals and a webhook receiver on the host itself
(group_data/sandbox.py); this module starts that receiver over SSH and reads what it got."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import wave
from datetime import datetime
from pathlib import Path

import pytest

from sandbox.client import base_url, http_client

from .conftest import ARTEFACTS, HTTPS_PORT, curl, ssh

pytestmark = pytest.mark.sandbox

MONITOR = "monitor.sandbox.test"
RECEIVED = "/var/lib/whisper-platform/test-alerts.jsonl"
# what the test receiver does: one JSON line per notification Alertmanager sends (its webhook body)
RECEIVER = r'''
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[1], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 9199), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def receiver(deployed):
    ssh(f"cat > /usr/local/lib/whisper-test-receiver.py <<'EOF'\n{RECEIVER}\nEOF\n"
        f"rm -f {RECEIVED}; systemctl stop whisper-test-receiver 2>/dev/null; "
        "systemctl reset-failed whisper-test-receiver 2>/dev/null; "
        f"systemd-run --unit whisper-test-receiver /usr/bin/python3 /usr/local/lib/whisper-test-receiver.py {RECEIVED}")
    yield
    ssh("systemctl stop whisper-test-receiver", check=False)


def notifications() -> list[dict]:
    out = ssh(f"cat {RECEIVED} 2>/dev/null", check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(alertname: str, status: str, since: float, timeout: float, **labels) -> float:
    """Seconds from `since` until the receiver got `alertname` with `status` (firing or resolved)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in notifications():
            for alert in note["alerts"]:
                if (alert["labels"].get("alertname") == alertname and alert["status"] == status
                        and all(alert["labels"].get(k) == v for k, v in labels.items())
                        and _after(alert, status, since)):
                    return time.time() - since
        time.sleep(2)
    raise AssertionError(f"no {status} {alertname} {labels or ''} within {timeout:.0f}s; the receiver got: "
                         + json.dumps([(a['labels'].get('alertname'), a['status']) for n in notifications()
                                       for a in n['alerts']]))


def _after(alert: dict, status: str, since: float) -> bool:
    """The alert started (firing) or ended (resolved) after `since` (less 30 s of clock and grouping slack)."""
    stamp = alert["endsAt"] if status == "resolved" else alert["startsAt"]
    seconds = datetime.fromisoformat(re.sub(r"\.\d+", "", stamp).replace("Z", "+00:00")).timestamp()
    return seconds >= since - 30


def prometheus(query: str) -> list[dict]:
    out = ssh("python3 -c 'import sys, urllib.request, urllib.parse; print(urllib.request.urlopen("
              "\"http://127.0.0.1:9090/prometheus/api/v1/query?query=\" + urllib.parse.quote(sys.argv[1])).read().decode())' "
              + _q(query)).stdout
    return json.loads(out)["data"]["result"]


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_every_monitoring_listener_is_on_loopback(deployed):
    units = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-blackbox-exporter",
             "prometheus-redis-exporter", "prometheus-nginx-exporter")
    assert ssh("systemctl is-active " + " ".join(units)).stdout.split() == ["active"] * len(units)
    listeners = ssh("ss -ltnpH").stdout.splitlines()
    ours = [line for line in listeners if re.search(r'"prometheus[^"]*"', line)]
    assert len(ours) >= len(units), listeners
    for line in ours:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:")), line
    # nginx's counters too (stub_status), and nothing else of ours is public but nginx's 80/443
    assert any(line.split()[3] == "127.0.0.1:8079" for line in listeners)
    assert ssh("stat -c '%a %U' /etc/whisper-platform/redis-exporter.env").stdout.split() == ["600", "root"]


def test_prometheus_runs_with_our_bounded_retention(deployed):
    # a fresh host: the Prometheus is ours, with retention bounded by time and by size
    args = ssh("cat /etc/default/prometheus").stdout
    assert "--storage.tsdb.retention.time=15d" in args and "--storage.tsdb.retention.size=512MB" in args
    assert "--web.listen-address=127.0.0.1:9090" in args


def test_scraping_never_starts_a_stopped_service(deployed):
    ssh("cd /opt/whisper-faster && (docker compose stop 2>/dev/null || docker-compose stop) >/dev/null 2>&1")
    starts = _starts()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "8001" in ssh("cat /var/lib/whisper-platform/monitoring/services.json").stdout:
        time.sleep(1)
    assert "8001" not in ssh("cat /var/lib/whisper-platform/monitoring/services.json").stdout
    time.sleep(15)   # three scrape intervals of the sandbox's 5 s
    # stopped, or never started on a fresh host: either way not running
    running = ssh("docker inspect -f '{{.State.Running}}' faster-whisper 2>/dev/null || echo absent").stdout.strip()
    assert running in ("false", "absent")
    assert _starts() == starts
    # the queues are still watched: Redis, not the stopped service, answers for them
    assert "faster" in [r["metric"]["service"] for r in prometheus("whisper_jobs_queued")]


def _starts() -> float:
    return sum(float(r["value"][1]) for r in prometheus('docker_autostart_starts_total{host="whisper.sandbox.test"}'))


def test_redis_stopped_and_started_alerts_and_resolves(deployed, receiver):
    since = time.time()
    ssh("systemctl stop redis-server")
    try:
        fired = wait_for("RedisDown", "firing", since, timeout=90)
    finally:
        ssh("systemctl start redis-server")
    back = time.time()
    resolved = wait_for("RedisDown", "resolved", back, timeout=90)
    print(f"\nRedisDown: firing {fired:.0f}s after the stop, resolved {resolved:.0f}s after the start")


def _wav(path: Path, seconds: float = 2.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))
    return path


def test_a_killed_worker_with_a_job_waiting_alerts_and_resolves(deployed, receiver, tmp_path):
    key = deployed["secrets"]["WHISPER_API_KEY"].split(",")[0]
    with http_client("whisper.sandbox.test") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        base = base_url("whisper.sandbox.test")
        assert client.get(base + "/health").status_code == 200   # wakes the service, its worker too
        since = time.time()
        ssh("docker kill faster-whisper-worker")
        with open(_wav(tmp_path / "silence.wav"), "rb") as f:
            r = client.post(base + "/v1/jobs", files={"file": f}, data={"language": "en"})
        assert r.status_code == 202, r.text
        try:
            fired = wait_for("JobsWithoutWorker", "firing", since, timeout=180, service="faster")
        finally:
            back = time.time()
            ssh("docker start faster-whisper-worker")
        resolved = wait_for("JobsWithoutWorker", "resolved", back, timeout=150, service="faster")
        deadline = time.monotonic() + 120
        while client.get(base + r.json()["status_url"]).json()["status"] in ("queued", "running") \
                and time.monotonic() < deadline:
            time.sleep(2)
    print(f"\nJobsWithoutWorker: firing {fired:.0f}s after the worker was killed, resolved {resolved:.0f}s after "
          "it was started again")
    assert fired <= 180


def test_the_monitoring_page_in_chromium(deployed):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make chromium` installs it"
    secrets = deployed["secrets"]
    user, password = secrets["WHISPER_BASIC_AUTH_USER"], secrets["WHISPER_BASIC_AUTH_PASSWORD"]
    # the same basic auth as the services; an API key does not open it; no CORS
    assert curl(MONITOR, "/prometheus/graph")["status"] == 401
    key = secrets["WHISPER_API_KEY"].split(",")[0]
    assert curl(MONITOR, "/prometheus/graph", "-H", f"Authorization: Bearer {key}")["status"] == 401
    # Debian's Prometheus serves its classic pages only (no React UI in the package): /classic/targets
    targets = "/prometheus/targets"
    if curl(MONITOR, targets, "-u", f"{user}:{password}")["status"] == 404:
        targets = "/prometheus/classic/targets"
    page = curl(MONITOR, targets, "-u", f"{user}:{password}", "-H", "Origin: https://portal.sandbox.test")
    assert page["status"] == 200 and "access-control-allow-origin" not in page["headers"]
    assert curl(MONITOR, "/alertmanager/", "-u", f"{user}:{password}")["status"] == 200

    # the faster service running (a request wakes it), so that the page shows it scraped too
    assert curl("whisper.sandbox.test", "/health", "-u", f"{user}:{password}")["status"] == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not prometheus('up{job="whisper_services"} == 1'):
        time.sleep(2)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "monitoring-targets.png"
    url = f"https://{user}:{password}@{MONITOR}:{HTTPS_PORT}{targets}"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
              f"--host-resolver-rules=MAP {MONITOR} 127.0.0.1", "--window-size=1400,1800",
              "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"]   # its styles loaded
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # every job up, the running service's too
    for job in ("whisper_autostart", "whisper_node", "whisper_redis", "whisper_nginx", "whisper_alertmanager",
                "whisper_tls", "whisper_prometheus", "whisper_services", "whisper_health"):
        assert re.search(rf"{job}\s*\(\d+/\d+ up\)", dom), (job, dom[:3000])
        up, total = map(int, re.search(rf"{job}\s*\((\d+)/(\d+) up\)", dom).groups())
        assert up == total and (total > 0 or job not in ("whisper_services", "whisper_health")), (job, up, total)
    subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
    print(f"\nmonitoring page screenshot: {shot}")
