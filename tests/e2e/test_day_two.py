"""Day two on the sandbox host: the routine events of a platform that lives for months, each one while jobs are
queued and running and a client polls throughout.

Events, in order (the host is the sandbox; "reboot" restarts its container, whose systemd boots again):
the disk holding jobs_dir running full, Redis restarted, Redis upgraded in place, Docker restarted with the
containers running, the autostart proxy restarted and nginx reloaded, the OOM killer taking a worker mid-job, a host
reboot, and a deploy that rebuilds a service's image and recreates its containers while jobs run (then one more,
back to the session's image). Asserted:
- every job succeeds exactly once, with one webhook, signed;
- the client sees no 5xx but the documented 503s (and 507 while the disk is full), each with Retry-After; while the
  host reboots nothing answers at all (its nginx is down), and at no other time;
- the platform serves again by itself (no operator step): /health "ok" and the job routes answering on every
  service, each job worker running.
One line per event is printed: seconds until the platform serves again, jobs in flight, jobs lost (must be 0).
The last measured table is in bench/README.md ("Day two").

Cost is kept down: one module on the session's sandbox, short jobs on tiny.en, events back to back while earlier
jobs still run. The sandbox serves again, with the session's images, when the module ends.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from sandbox.client import base_url, http_client
from stt_common.jobs.signing import verify

from .conftest import AGENDA, REPO, SANDBOX, pyinfra, speech, ssh

pytestmark = pytest.mark.sandbox

SERVICES = [key for key in os.environ.get("SANDBOX_SERVICES", "faster,whisperx").split(",") if key]
VHOSTS = {"faster": "whisper.sandbox.test", "whisperx": "whisperx.sandbox.test"}
PROJECTS = {"faster": "/opt/whisper-faster", "whisperx": "/opt/whisperx"}
WORKERS = {"faster": "faster-whisper-worker", "whisperx": "whisperx-worker"}
# the job's fields: short and cheap (tiny.en; WhisperX without alignment and diarization: plumbing, not quality)
FIELDS = {"faster": {"language": "en"},
          "whisperx": {"language": "en", "model": "/models/tiny.en", "align": "false", "diarize": "false"}}
# jobs submitted at each event: one runs while the next waits (WhisperX's slower jobs: one, running)
PER_EVENT = {"faster": 2, "whisperx": 1}
JOBS_DIR = "/var/lib/whisper-platform/jobs"
HOOK_PORT = 8919
HOOK_LOG = "/var/lib/day-two-webhooks.jsonl"
HOOK_UNIT = "day-two-webhooks"
# what a client may see besides 2xx: the documented 503s (and 507) of the services, the proxy and nginx
DOCUMENTED = {503: {"jobs_unavailable", "service_unavailable", "starting", "docker_unavailable"},
              507: {"insufficient_storage"}}
# a webhook receiver on the sandbox host (the services reach it on Docker's bridge): a systemd unit, so that it
# comes back after the reboot; it logs each delivery (its signature header and raw body) as a JSON line, and the
# test checks the signatures as a caller does (stt_common.jobs.signing.verify with the caller's webhook secret)
RECEIVER = r'''
import http.server, json, sys
log = sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(log, "a") as f:
            f.write(json.dumps({"signature": self.headers.get("X-STT-Signature", ""), "body": body.decode(),
                                "payload": json.loads(body)}) + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Hook).serve_forever()
'''


def compose() -> str:
    return "docker compose" if ssh("docker compose version", check=False).returncode == 0 else "docker-compose"


@dataclass
class Event:
    name: str
    jobs: list = field(default_factory=list)       # ids of the jobs in flight when it happened
    serving_s: float | None = None
    notes: str = ""


class DayTwo:
    """The client's side: jobs submitted per event, a poller that never stops, and what it saw."""

    def __init__(self, key: str, audio: str, hook_url: str):
        self.audio, self.hook_url = audio, hook_url
        # longer than the autostart proxy's maxWait (300 s): a request to a service that is starting waits for it
        self.clients = {svc: http_client(VHOSTS[svc], timeout=330) for svc in SERVICES}
        for c in self.clients.values():
            c.headers["Authorization"] = f"Bearer {key}"
        self.jobs: dict[str, dict] = {}          # id -> {"svc", "event", "status", "body"}
        self.events: list[Event] = []
        self.seen: list[tuple] = []              # (monotonic time, where, status or exception name, code)
        self.rebooting = False
        self.reboot_windows: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._quiet = threading.Lock()   # held by the poller while it polls, and by quiet()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, name="day-two-poller", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests
    def request(self, svc: str, method: str, path: str, **kw) -> httpx.Response | None:
        where = f"{method} {svc}{path if '/v1/jobs/' not in path else '/v1/jobs/<id>' + path[41:]}"
        try:
            r = self.clients[svc].request(method, base_url(VHOSTS[svc]) + path, **kw)
        except httpx.HTTPError as e:
            self.seen.append((time.monotonic(), where, type(e).__name__, None))
            return None
        code = None
        if r.status_code >= 400:
            try:
                err = r.json().get("error") or {}
                code = err.get("code") if isinstance(err.get("code"), str) else err.get("type")
            except ValueError:
                code = "not-json"
            if r.status_code in DOCUMENTED and not r.headers.get("retry-after"):
                code = f"{code} (no Retry-After)"
        self.seen.append((time.monotonic(), where, r.status_code, code))
        return r

    def _poll(self) -> None:
        """The client that polls throughout: every job's status (through the list), one job's own status, health."""
        while not self._stop.is_set():
            with self._quiet:
                self._poll_once()
            self._stop.wait(0.5)

    @contextmanager
    def quiet(self):
        """No polling meanwhile: the test's own maintenance (a file system mounted under a stopped project), which
        a request would race by starting the project again."""
        with self._quiet:
            yield

    def _poll_once(self) -> None:
        for svc in SERVICES:
            r = self.request(svc, "GET", "/v1/jobs", params={"limit": 100})
            if r is not None and r.status_code == 200:
                with self._lock:
                    for body in r.json()["data"]:
                        if body["id"] in self.jobs:
                            self.jobs[body["id"]].update(status=body["status"], body=body)
            pending = [i for i, j in self.jobs.items() if j["svc"] == svc and j["status"] in ("queued", "running")]
            if pending:
                self.request(svc, "GET", f"/v1/jobs/{pending[0]}")
            self.request(svc, "GET", "/health")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for c in self.clients.values():
            c.close()

    # ------------------------------------------------------------------ jobs
    def submit(self, svc: str, event: str) -> str | None:
        """One job; None when refused with a documented answer (the full disk's 507)."""
        with open(self.audio, "rb") as f:
            r = self.request(svc, "POST", "/v1/jobs", files={"file": ("meeting.mp3", f)},
                             data={**FIELDS[svc], "callback_url": self.hook_url})
        assert r is not None, "POST /v1/jobs got no answer"
        if r.status_code in DOCUMENTED:
            return None
        assert r.status_code == 202, r.text
        with self._lock:
            self.jobs[r.json()["id"]] = {"svc": svc, "event": event, "status": "queued", "body": r.json()}
        return r.json()["id"]

    def start(self, name: str, services=None) -> Event:
        """An event: more jobs on each service (PER_EVENT), then wait until a job of each runs."""
        services = services or SERVICES
        event = Event(name)
        self.events.append(event)
        for svc in services:
            event.jobs += [self.submit(svc, name) for _ in range(PER_EVENT[svc])]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with self._lock:
                running = {j["svc"] for j in self.jobs.values() if j["status"] == "running"}
            if running >= set(services):
                break
            time.sleep(0.3)
        event.jobs = [i for i in event.jobs if i]
        return event

    def pending(self, svc: str | None = None) -> list[str]:
        with self._lock:
            return [i for i, j in self.jobs.items() if j["status"] in ("queued", "running")
                    and (svc is None or j["svc"] == svc)]

    def wait_done(self, svc: str | None = None, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while self.pending(svc) and time.monotonic() < deadline:
            time.sleep(1)
        assert not self.pending(svc), self.report_pending()

    def report_pending(self) -> str:
        pending = {i: self.jobs[i]["body"] for i in self.pending()}
        logs = ssh("docker ps -a; " + "; ".join(f"docker logs --tail 20 {WORKERS[s]} 2>&1" for s in SERVICES),
                   check=False).stdout
        return f"jobs still pending: {json.dumps(pending, indent=1)[:4000]}\n{logs[-6000:]}"

    # ------------------------------------------------------------------ serving
    def serving(self) -> bool:
        """What a user needs, on every service: /health ok (not degraded), the job routes answering, the job
        worker running (it takes the queued jobs)."""
        for svc in SERVICES:
            h = self.request(svc, "GET", "/health")
            if h is None or h.status_code != 200 or h.json().get("status") != "ok":
                return False
            r = self.request(svc, "GET", "/v1/jobs", params={"limit": 1})
            if r is None or r.status_code != 200:
                return False
        running = ssh("docker inspect -f '{{.State.Running}}' " + " ".join(WORKERS[s] for s in SERVICES),
                      check=False).stdout.split()
        return running == ["true"] * len(SERVICES)

    def wait_serving(self, event: Event, since: float, timeout: float = 300) -> float:
        deadline = since + timeout
        while time.monotonic() < deadline:
            if self.serving():
                event.serving_s = time.monotonic() - since
                return event.serving_s
            time.sleep(0.5)
        raise AssertionError(f"{event.name}: not serving {timeout} s later\n{self.report_pending()}")

    # ------------------------------------------------------------------ what the client saw
    def unexpected(self) -> list[tuple]:
        """Answers outside the contract: a 5xx that is not a documented 503/507 with Retry-After, any other error
        than 404-free 4xx, or no answer at all outside a reboot."""
        bad = []
        for t, where, status, code in self.seen:
            in_reboot = any(a <= t <= b for a, b in self.reboot_windows)
            if isinstance(status, str):
                if not in_reboot:
                    bad.append((round(t, 1), where, status, code))
            elif status >= 500 and (status not in DOCUMENTED or code not in DOCUMENTED[status]):
                bad.append((round(t, 1), where, status, code))
            elif 400 <= status < 500:
                bad.append((round(t, 1), where, status, code))
        return bad

    def documented(self) -> dict:
        out: dict = {}
        for _, _, status, code in self.seen:
            if status in DOCUMENTED and code in DOCUMENTED[status]:
                out[f"{status} {code}"] = out.get(f"{status} {code}", 0) + 1
        return out


def webhooks() -> dict[str, list]:
    out: dict[str, list] = {}
    for line in ssh(f"cat {HOOK_LOG} 2>/dev/null", check=False).stdout.splitlines():
        entry = json.loads(line)
        out.setdefault(entry["payload"]["id"], []).append(entry)
    return out


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """About a minute of speech as mp3 (the agenda's first half, twice): a few seconds of work for tiny.en, long
    enough to be caught running."""
    folder = tmp_path_factory.mktemp("day-two")
    wav = speech(folder, "meeting", AGENDA[:6] * 2)
    out = folder / "meeting.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", wav, str(out)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def day(deployed, audio):
    q = shlex.quote
    ssh(f"cat > /usr/local/bin/{HOOK_UNIT} <<'EOF'\n{RECEIVER}\nEOF\n"
        f"printf '[Unit]\\nDescription=day-two tests: webhook receiver\\nAfter=network.target\\n"
        f"[Service]\\nExecStart=/usr/bin/python3 /usr/local/bin/{HOOK_UNIT} {HOOK_PORT} {HOOK_LOG}\\nRestart=always\\n"
        f"[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/{HOOK_UNIT}.service && "
        f"rm -f {HOOK_LOG} && systemctl daemon-reload && systemctl enable --now {HOOK_UNIT} >/dev/null 2>&1")
    # the host's address on Docker's default bridge: every container reaches it through its own gateway
    gateway = ssh("ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1").stdout.strip()
    day = DayTwo(deployed["secrets"]["WHISPER_API_KEY"].split(",")[0], audio, f"http://{gateway}:{HOOK_PORT}/hook")
    started = time.monotonic()
    yield day
    day.close()
    lines = [f"day two on the sandbox ({', '.join(SERVICES)}; {time.monotonic() - started:.0f} s in all)",
             f"{'event':58} {'serving again (s)':>18} {'jobs in flight':>15} {'jobs lost':>10}"]
    for e in day.events:
        lost = sum(1 for i in e.jobs if day.jobs[i]["status"] != "succeeded")
        serving = "-" if e.serving_s is None else f"{e.serving_s:.1f}"
        lines.append(f"{e.name:58} {serving:>18} {len(e.jobs):>15} {lost:>10}" + (f"  {e.notes}" if e.notes else ""))
    lines.append(f"client answers besides 2xx: {day.documented() or 'none'}; outside the contract: "
                 f"{len(day.unexpected())}")
    lines += [f"  outside the contract: {u}" for u in day.unexpected()[:20]]
    print("\n" + "\n".join(lines))
    (REPO / ".sandbox" / "day-two.txt").write_text("\n".join(lines) + "\n")
    ssh(f"systemctl disable --now {HOOK_UNIT} >/dev/null 2>&1; rm -f /etc/systemd/system/{HOOK_UNIT}.service "
        f"/usr/local/bin/{HOOK_UNIT} {q(HOOK_LOG)}; systemctl daemon-reload", check=False)


def test_the_disk_holding_jobs_dir_runs_full(day):
    """New jobs get 507 while the disk is full, /health says why, the jobs already accepted finish (a result that
    no longer fits on disk goes to Redis), and room freed means jobs are taken again at once. The jobs' folder of
    the first service is a small file system for this test (a tmpfs the size of the reserve plus 64 MB), mounted
    while its project is stopped and put back the same way, its files kept."""
    svc = SERVICES[0]
    folder, project = f"{JOBS_DIR}/{svc}", PROJECTS[svc]
    reserve = int(ssh(f"grep -h STT_JOBS_MIN_FREE_MB {project}/docker-compose.yml").stdout.split('"')[1])
    day.wait_done(svc)
    with day.quiet():
        ssh(f"cd {project} && {compose()} stop >/dev/null 2>&1 && mount -t tmpfs -o size={reserve + 64}m,mode=750,"
            f"uid=10001,gid=10001 day-two-jobs {folder} && cd {project} && {compose()} up -d >/dev/null 2>&1")
    try:
        event = day.start("the disk holding jobs_dir runs full", services=[svc])
        # full: not a byte left (what the running jobs' results meet), then new jobs refused
        ssh(f"fallocate -l $(( $(stat -f -c '%a*%S' {folder}) - 65536 )) {folder}/filler; "
            f"dd if=/dev/zero of={folder}/filler2 bs=4k status=none 2>/dev/null; true")
        with open(day.audio, "rb") as f:
            refused = day.request(svc, "POST", "/v1/jobs", files={"file": ("m.mp3", f)}, data=FIELDS[svc])
        assert refused.status_code == 507 and refused.json()["error"]["code"] == "insufficient_storage", refused.text
        health = day.request(svc, "GET", "/health").json()
        assert health["status"] == "degraded" and "disk" in health["degraded"], health
        day.wait_done(svc, timeout=240)
        for job_id in event.jobs:   # their results did not fit on disk: kept in Redis, served the same way
            r = day.request(svc, "GET", f"/v1/jobs/{job_id}/result", params={"response_format": "text"})
            assert r.status_code == 200 and "agenda" in r.text.lower(), r.text
        assert ssh(f"ls -A {folder}/{event.jobs[0]}").stdout.split() == ["audio"]   # no half-written result
        freed = time.monotonic()
        ssh(f"rm -f {folder}/filler {folder}/filler2")
        event.jobs.append(day.submit(svc, event.name))
        day.wait_serving(event, freed)
        event.notes = "(from the space freed)"
        day.wait_done(svc)
    finally:   # its files back on the real disk, its project running again (both containers)
        staging = "/var/lib/whisper-platform/day-two-jobs"
        with day.quiet():
            ssh(f"cd {project} && {compose()} stop >/dev/null 2>&1; rm -f {folder}/filler {folder}/filler2; "
                f"cp -a {folder} {staging} && umount {folder} && cp -a {staging}/. {folder}/ && rm -rf {staging}; "
                f"cd {project} && {compose()} up -d >/dev/null 2>&1", check=False)


# events that are one command on the host; the platform must come back by itself
HOST_EVENTS = [
    ("Redis restarted (systemctl restart redis-server)", "systemctl restart redis-server"),
    ("Redis upgraded in place (apt-get install --reinstall)",
     "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall redis-server >/dev/null"),
    ("Docker restarted with the containers running", "systemctl restart docker"),
    ("autostart proxy restarted, nginx reloaded", "systemctl restart docker-autostart && systemctl reload nginx"),
]


@pytest.mark.parametrize("name, command", HOST_EVENTS, ids=["redis-restart", "redis-upgrade", "docker-restart",
                                                            "proxy-restart-nginx-reload"])
def test_a_routine_host_event(day, name, command):
    event = day.start(name)
    t0 = time.monotonic()
    ssh(command)
    day.wait_serving(event, t0)


def test_oom_killer_takes_a_worker_mid_job(day):
    """The kernel's OOM killer, for real: the running worker made its favourite victim (oom_score_adj 1000), then
    a process in the same container allocates past the container's memory limit."""
    event = day.start("OOM killer takes a worker mid-job")
    worker = WORKERS[SERVICES[0]]
    restarts = int(ssh(f"docker inspect -f '{{{{.RestartCount}}}}' {worker}").stdout)
    # the container's processes (its memory cgroup, v1 or v2) become the OOM killer's first choice; the allocation
    # that follows (64 MB at a time, each written to) is the one that passes the container's memory limit
    pid = ssh(f"docker inspect -f '{{{{.State.Pid}}}}' {worker}").stdout.strip()
    cgroup = ssh(f"line=$(grep -E '^[0-9]+:memory:' /proc/{pid}/cgroup) && echo /sys/fs/cgroup/memory${{line##*:}} "
                 f"|| echo /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/{pid}/cgroup)").stdout.strip()
    ssh(f"for p in $(cat {cgroup}/cgroup.procs); do echo 1000 > /proc/$p/oom_score_adj; done")
    t0 = time.monotonic()
    ssh(f"docker exec {worker} /opt/venv/bin/python -c 'x = [bytes([1]) * (64 << 20) for _ in range(512)]'",
        check=False)
    deadline = time.monotonic() + 60
    while int(ssh(f"docker inspect -f '{{{{.RestartCount}}}}' {worker}").stdout) == restarts:
        assert time.monotonic() < deadline, f"{worker} was not killed"
        time.sleep(0.5)
    assert ssh(f"docker inspect -f '{{{{.State.OOMKilled}}}}' {worker}").stdout.strip() == "true"
    day.wait_serving(event, t0)


def test_host_rebooted(day):
    event = day.start("host reboot (sandbox container restarted)")
    t0 = time.monotonic()
    day.reboot_windows.append((t0, t0 + 600))
    # systemd stops the host's services in seconds (the workers' 30 s grace at most); its container then does not
    # always exit by itself once halted: Docker's stop timeout ends it
    subprocess.run(["docker", "restart", "-t", "45", SANDBOX], check=True, capture_output=True)
    booted = time.monotonic()
    subprocess.run(["bash", "sandbox/host.sh", "ready", SANDBOX, os.environ.get("SANDBOX_SSH_PORT", "2222")],
                   cwd=REPO, check=True, capture_output=True)
    day.wait_serving(event, t0)
    event.notes = f"(the container's stop and start took {booted - t0:.0f} s of it)"
    day.reboot_windows[-1] = (t0, time.monotonic())


def _release(build: str) -> list[str]:
    """--data for a deploy whose first service's image gets a build argument (a new tag: its image is built and its
    running containers recreated; the other service's stay, as a release of one service does), keeping the
    services this session deploys."""
    extra = {key: {"enabled": key in SERVICES,
                   **({"build_args": {"DAY_TWO_RELEASE": build}} if build and key == SERVICES[0] else {})}
             for key in VHOSTS}
    if len(SERVICES) == len(VHOSTS) and not build:
        return []
    return ["--data", "service_overrides_extra=" + json.dumps(extra)]


def test_a_deploy_rebuilds_the_images_while_jobs_run(day):
    for name, build in (("deploy: images rebuilt, containers recreated", "2"),
                        ("deploy: back to the session's images", "")):
        event = day.start(name)
        t0 = time.monotonic()
        out = pyinfra("-y", *_release(build)).output
        assert "Build image" in out, out[-3000:]
        took = time.monotonic() - t0
        day.wait_serving(event, time.monotonic())
        event.notes = f"(from the deploy's end; the deploy took {took:.0f} s)"


def test_every_job_succeeded_once_with_one_webhook(day):
    day.wait_done()
    hooks = {}
    deadline = time.monotonic() + 120   # a webhook that met the reboot is retried 10 s, then 60 s later
    while time.monotonic() < deadline:
        hooks = webhooks()
        if all(i in hooks for i in day.jobs):
            break
        time.sleep(2)
    failed = {i: j["body"] for i, j in day.jobs.items() if j["status"] != "succeeded"}
    assert not failed, failed
    # each caller reads its webhook secret from the service (derived from the host's master secret and the caller)
    secrets = {svc: day.request(svc, "GET", "/v1/jobs/webhook-secret").json()["secret"] for svc in SERVICES}

    def valid(job_id: str, hook: dict) -> bool:
        return verify(secrets[day.jobs[job_id]["svc"]], hook["signature"], day.hook_url, hook["body"].encode(),
                      tolerance_s=3600)

    wrong = {i: hooks.get(i) for i in day.jobs if len(hooks.get(i, [])) != 1
             or not valid(i, hooks[i][0]) or hooks[i][0]["payload"]["status"] != "succeeded"}
    assert not wrong, wrong
    for svc in SERVICES:
        finished = [i for i, j in day.jobs.items() if j["svc"] == svc]
        r = day.request(svc, "GET", f"/v1/jobs/{finished[-1]}/result", params={"response_format": "text"})
        assert r.status_code == 200 and "agenda" in r.text.lower(), r.text
    assert not day.unexpected(), day.unexpected()
