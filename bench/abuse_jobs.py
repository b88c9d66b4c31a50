"""The job path's trust attacks for bench/abuse.py (`--jobs`): a worker host's Redis user, webhook receivers that
rebind, redirect or drip, bad callback URLs, a submission flood, a full Redis, two basic-auth users. Each attack
runs against the code of --jobs-before-commit and of this checkout, side by side, on the same machine:

- a redis-server on 127.0.0.1 (password, AOF off), the faster API and one job worker of that code (tiny.en);
- webhook receivers on 127.0.0.1 (tests/support/local_http.py); names resolved by a patched getaddrinfo where DNS matters,
  so that nothing leaves the machine: a rebinding name answers 100.64.0.1 (CGNAT, which the old check let through)
  and then 127.0.0.1. Neither version ever connects to 100.64.0.1: the old one resolves again before connecting,
  the new one refuses the range;
- "after" where a run needs a public receiver uses the operator's STT_WEBHOOK_ALLOW_NETWORKS=127.0.0.2/32 (the
  stand-in for a public address, as in tests/unit/test_outbound.py); "before" has no such knob.

Each attack returns (status, time, note) for abuse.py's table; the RSS and disk columns are not measured here."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

import httpx

from support.jobs_support import RedisServer
from support.local_http import Receiver, drip, redirect

KEY = "abuse-bench-key"
PROXY_KEY = "pk-" + "b" * 64
SECRET = "abuse-bench-webhook-secret"


class Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PATCH = """
import socket, sys
_real = socket.getaddrinfo
_calls = {}
_REBINDING = {"rebind.bench.test": "127.0.0.1", "hop-before.bench.test": "127.0.0.2"}
def _bench_getaddrinfo(host, port, *a, **k):
    if host in _REBINDING:   # first 100.64.0.1 (passes the old check), then a loopback address
        n = _calls[host] = _calls.get(host, 0) + 1
        address = "100.64.0.1" if n % 2 == 1 else _REBINDING[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
    if host == "hop.bench.test":
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
    return _real(host, port, *a, **k)
socket.getaddrinfo = _bench_getaddrinfo
"""


class Platform:
    """Redis, the faster API and a job worker of one version of the code."""

    def __init__(self, version: str, code: Path, work: Path, model: str, python: str = sys.executable):
        self.version, self.code, self.model, self.python = version, code, model, python
        self.work = work / f"jobs-{version}"
        self.procs: dict = {}
        self.url = ""

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STT_") and k not in ("PYTHONPATH",)}
        patch = self.work / "patch"
        env.update({
            "PYTHONPATH": os.pathsep.join([str(patch), str(self.code / "images/common"), str(self.code / "images/faster")]),
            "STT_MODEL": self.model, "STT_MODELS_DIR": str(self.work / "models"), "STT_TMP_DIR": str(self.work / "tmp"),
            "STT_CPU_THREADS": "2", "HF_HUB_OFFLINE": "1", "STT_API_KEYS": KEY, "STT_PROXY_KEY": PROXY_KEY,
            "STT_REDIS_URL": self.redis.url, "REDIS_PASSWORD": self.redis.password,
            "STT_JOBS_DIR": str(self.work / "jobs"), "STT_WEBHOOK_SECRET": SECRET, "STT_JOB_HEARTBEAT_TTL": "10",
            "STT_WEBHOOK_ALLOW_NETWORKS": "127.0.0.2/32", "STT_JOBS_SERVICE": "faster", "LOG_LEVEL": "warning",
            "ACCESS_LOG": "0", **extra})
        return env

    def start(self, **extra) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        for d in ("models", "tmp", "jobs", "patch", "redis"):
            (self.work / d).mkdir(parents=True)
        (self.work / "patch" / "sitecustomize.py").write_text(PATCH)   # the bench's DNS, in both processes
        self.redis = RedisServer(self.work / "redis").start()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = self.env(HOST="127.0.0.1", PORT=str(port), **extra)
        self.procs["api"] = subprocess.Popen([self.python, "-m", "faster_server"], env=env, cwd=str(self.work),
                                             stdout=open(self.work / "api.log", "ab"), stderr=subprocess.STDOUT,
                                             start_new_session=True)
        self.procs["worker"] = subprocess.Popen([self.python, "-m", "faster_server.worker"],
                                                env={**env, "LOG_LEVEL": "INFO"}, cwd=str(self.work),
                                                stdout=open(self.work / "worker.log", "ab"), stderr=subprocess.STDOUT,
                                                start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"jobs {self.version} not ready: " + (self.work / "api.log").read_text()[-1500:])

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()
        self.redis.stop()

    def conn(self):
        from redis import Redis
        return Redis(port=self.redis.port, password=self.redis.password)

    def submit(self, audio: Path, headers: Optional[dict] = None, **fields) -> httpx.Response:
        with open(audio, "rb") as f:
            return httpx.post(self.url + "/v1/jobs", headers=headers or {"Authorization": f"Bearer {KEY}"},
                              files={"file": f}, data=fields, timeout=60)

    def status(self, job_id: str, headers: Optional[dict] = None) -> dict:
        return httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=headers or {"Authorization": f"Bearer {KEY}"},
                         timeout=10).json()

    def wait(self, job_id: str, cap: float) -> dict:
        deadline = time.monotonic() + cap
        body = {}
        while time.monotonic() < deadline:
            body = self.status(job_id)
            if body.get("status") in ("succeeded", "failed", "canceled"):
                return body
            time.sleep(0.3)
        return body


def old_worker_acl(code: Path) -> Optional[str]:
    """The Redis ACL rules the deploy of this code gives a worker host (None: it gives it no Redis user)."""
    m = re.search(r'WORKER_ACL = "([^"]+)"', (code / "stages/link.py").read_text())
    return m.group(1) if m else None


def code(r: httpx.Response) -> str:
    try:
        return f"{r.status_code} {r.json()['error']['code']}"
    except Exception:  # noqa: BLE001
        return str(r.status_code)


# ------------------------------------------------------------------ the attacks: (plat, audio, cap) -> (status, time, note)
def worker_user_pickle(plat: Platform, audio, cap):
    from redis import Redis

    marker = plat.work / "pwned"
    job = plat.submit(audio["short"]).json()
    acl = old_worker_acl(plat.code)
    t0 = time.monotonic()
    if acl:
        plat.conn().execute_command("ACL", "SETUSER", "worker-bench", "on", ">bench-worker-pw", *acl.split())
        as_worker = Redis(port=plat.redis.port, username="worker-bench", password="bench-worker-pw")
        as_worker.hset(f"rq:job:{job['id']}", "meta", pickle.dumps(Planted(str(marker))))
        how = "written with a worker host's Redis user"
        others = []
        for name, call in (("SWAPDB", lambda: as_worker.swapdb(0, 1)), ("PUBLISH", lambda: as_worker.publish("x", "y")),
                           ("SCAN", lambda: as_worker.scan(0))):
            try:
                call()
                others.append(f"{name} allowed")
            except Exception as e:  # noqa: BLE001
                others.append(f"{name} refused ({type(e).__name__})")
        plat.conn().swapdb(0, 1) if "SWAPDB allowed" in others else None   # put the jobs back
    else:
        plat.conn().hset(f"rq:job:{job['id']}", "meta", pickle.dumps(Planted(str(marker))))
        how = "worker hosts have no Redis user; the same bytes written by an admin"
        others = ["SWAPDB, PUBLISH, SCAN: no Redis credential on a worker host"]
    r = httpx.get(f"{plat.url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    ran = marker.exists()
    return code(r), f"{time.monotonic() - t0:.2f} s", f"{how}; the API {'RAN the payload' if ran else 'ran nothing'}; " \
                                                      + ", ".join(others)


def _callback_job(plat: Platform, audio, url: str, cap: float) -> tuple[dict, float]:
    r = plat.submit(audio["short"], callback_url=url)
    if r.status_code != 202:
        return {"status": code(r)}, 0.0
    done = plat.wait(r.json()["id"], cap)
    return done, time.monotonic()


def rebinding(plat: Platform, audio, cap):
    with Receiver("127.0.0.1") as local:
        t0 = time.monotonic()
        r = plat.submit(audio["short"], callback_url=f"http://rebind.bench.test:{local.port}/internal")
        took = time.monotonic() - t0
        if r.status_code == 202:
            plat.wait(r.json()["id"], cap)
        deadline = time.monotonic() + 15
        while not local.requests and time.monotonic() < deadline:
            time.sleep(0.2)
    reached = bool(local.requests)
    return f"submit {code(r)}", f"{took:.2f} s", \
        f"127.0.0.1 {'REACHED by the webhook' if reached else 'not reached'} (the name answers 100.64.0.1, then " \
        "127.0.0.1)"


def redirect_private(plat: Platform, audio, cap):
    with Receiver("127.0.0.1") as target, Receiver("127.0.0.2", behave=redirect("")) as hop:
        hop.behave = redirect(f"{target.url}/internal")
        # before: a name the old check lets through, whose second answer is the hop; after: the hop as a public
        # receiver (STT_WEBHOOK_ALLOW_NETWORKS)
        url = f"http://hop-before.bench.test:{hop.port}/hook" if plat.version == "before" \
            else f"http://hop.bench.test:{hop.port}/hook"
        t0 = time.monotonic()
        _callback_job(plat, audio, url, cap)
        deadline = time.monotonic() + 15
        while not (target.requests or hop.requests) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    return f"{len(hop.requests)} to the hop", f"{time.monotonic() - t0:.1f} s", \
        f"302 to 127.0.0.1: {'FOLLOWED' if target.requests else 'not followed'}"


def slow_drip(plat: Platform, audio, cap):
    """A receiver that answers one byte a second, then a second job without a callback: when does it start?"""
    with Receiver("127.0.0.1", behave=drip(1.0, total=100_000)) as slow:
        first = plat.submit(audio["short"], callback_url=f"http://127.0.0.1:{slow.port}/hook")
        second = plat.submit(audio["short"])
        if first.status_code != 202 or second.status_code != 202:
            return f"{first.status_code}/{second.status_code}", "-", "submission refused"
        a = plat.wait(first.json()["id"], cap)
        b = plat.wait(second.json()["id"], cap)
    from datetime import datetime

    def when(iso):
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None
    if b.get("status") != "succeeded":
        return "(drip)", f"> {cap:.0f} s", f"the next job was still {b.get('status')} at the cap: the worker was held"
    held = when(b["started_at"]) - when(a["finished_at"])
    return "(drip)", f"next job {held:.1f} s after", "the worker delivered on its own thread" if held < 5 \
        else "the worker was held by the delivery"


slow_drip.env = {"STT_WEBHOOK_ALLOW_PRIVATE": "1"}   # a receiver on this machine, both versions


def bad_url(url: str) -> Callable:
    def attack(plat: Platform, audio, cap):
        t0 = time.monotonic()
        r = plat.submit(audio["short"], callback_url=url)
        took = f"{time.monotonic() - t0:.2f} s"
        if r.status_code != 202:
            return code(r), took, ""
        done = plat.wait(r.json()["id"], cap)
        time.sleep(2)
        log = (plat.work / "worker.log").read_text(errors="replace")
        crash = next((w for w in ("InvalidURL", "ValueError", "Traceback") if w in log), None)
        return code(r), took, f"the job {done.get('status')}; its delivery " + \
            (f"raised {crash} in the worker" if crash else "failed quietly")
    return attack


def flood(plat: Platform, audio, cap, n: int = 4000):
    """One caller POSTs small jobs as fast as it can (Redis's maxmemory 2 MB above what it holds)."""
    plat.conn().config_set("maxmemory", str(int(plat.conn().info("memory")["used_memory"]) + 2 * 1024 * 1024))
    plat.conn().config_set("maxmemory-policy", "noeviction")
    counts: dict = {}
    t0 = time.monotonic()
    first_refusal = None
    with httpx.Client(timeout=30) as c:
        data = audio["tiny"].read_bytes()
        for i in range(n):
            if time.monotonic() - t0 > cap:
                break
            r = c.post(plat.url + "/v1/jobs", headers={"Authorization": f"Bearer {KEY}"}, files={"file": ("a.wav", data)})
            k = code(r) if r.status_code != 202 else "202"
            counts[k] = counts.get(k, 0) + 1
            if r.status_code != 202 and first_refusal is None:
                first_refusal = (i, k, r.headers.get("retry-after"))
    status = ", ".join(f"{v} x {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    note = f"first refusal at POST {first_refusal[0] + 1}: {first_refusal[1]}" + \
        (f", Retry-After {first_refusal[2]}" if first_refusal and first_refusal[2] else "") if first_refusal else \
        "never refused"
    return status, f"{time.monotonic() - t0:.1f} s", note


def redis_full(plat: Platform, audio, cap):
    """Redis at maxmemory (filled by other data): what a submission gets, and what it leaves."""
    c = plat.conn()
    c.config_set("maxmemory", str(int(c.info("memory")["used_memory"]) + 256 * 1024))
    c.config_set("maxmemory-policy", "noeviction")
    try:
        for i in range(100_000):
            c.set(f"filler:{i}", "x" * 1024)
    except Exception:  # noqa: BLE001 - full
        pass
    jobs_before = set(os.listdir(plat.work / "jobs"))
    t0 = time.monotonic()
    statuses = [code(plat.submit(audio["short"])) for _ in range(5)]
    left = set(os.listdir(plat.work / "jobs")) - jobs_before
    return ", ".join(sorted(set(statuses))), f"{(time.monotonic() - t0) / 5:.2f} s each", \
        f"{len(left)} job folders left behind"


def basic_auth_users(plat: Platform, audio, cap):
    """User A submits, user B lists, both as nginx forwards them (before: the API key #1 for every basic-auth
    user; after: the proxy key and X-STT-User; the nginx side: tests/integration/provision/test_nginx_vhosts.py)."""
    def as_user(name):
        if plat.version == "before":
            return {"Authorization": f"Bearer {KEY}"}
        return {"Authorization": f"Bearer {PROXY_KEY}", "X-STT-User": name}
    t0 = time.monotonic()
    mine = plat.submit(audio["short"], headers=as_user("alice")).json()["id"]
    seen = [j["id"] for j in httpx.get(plat.url + "/v1/jobs", headers=as_user("bob"), timeout=10).json()["data"]]
    deleted = httpx.delete(f"{plat.url}/v1/jobs/{mine}", headers=as_user("bob"), timeout=10).status_code
    return f"B lists {int(mine in seen)} of A's 1", f"{time.monotonic() - t0:.2f} s", f"B's DELETE of A's job: {deleted}"


JOB_ATTACKS: List[tuple[str, Callable]] = [
    ("pickle in a job's hash (a worker host's Redis user)", worker_user_pickle),
    ("webhook: a name that rebinds to 127.0.0.1", rebinding),
    ("webhook: a 302 to 127.0.0.1", redirect_private),
    ("webhook: receiver drips 1 byte/s", slow_drip),
    ("callback_url with a tab", bad_url("http://rebind.bench.test:9/ho\tok")),
    ("callback_url http://x:99999/", bad_url("http://x:99999/")),
    ("two basic-auth users", basic_auth_users),
    ("one caller POSTs 4000 small jobs", flood),
    ("Redis at maxmemory", redis_full),
]


def run(before: Path, after: Path, model: str, cap: float, only: str = "") -> dict:
    """{(attack, version): (status, time, note)}; each attack on a fresh platform (its Redis, API, worker)."""
    work = Path(tempfile.mkdtemp(prefix="abuse-jobs-"))
    audio_dir = work / "audio"
    audio_dir.mkdir()
    short = audio_dir / "short.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(short), "the report is ready"], check=True)
    tiny = audio_dir / "tiny.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(tiny), "trim", "0", "0.2"], check=True)
    audio = {"short": short, "tiny": tiny}
    results = {}
    try:
        for name, fn in JOB_ATTACKS:
            if only not in name:
                continue
            for version, code_dir in (("before", before), ("after", after)):
                plat = Platform(version, code_dir, work, model)
                print(f"# jobs {version}: {name}", file=sys.stderr, flush=True)
                try:
                    plat.start(**getattr(fn, "env", {}))
                    results[(name, version)] = fn(plat, audio, cap)
                except Exception as e:  # noqa: BLE001 - a broken attack is a result too
                    results[(name, version)] = ("error", "-", f"{type(e).__name__}: {str(e)[:100]}")
                finally:
                    plat.stop()
                print(f"#   {results[(name, version)]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: dict, before_commit: str) -> str:
    lines = [f"\njob path, before = {before_commit}, after = this checkout\n",
             "| attack | status before -> after | time before -> after | notes |", "| --- | --- | --- | --- |"]
    for name, _ in JOB_ATTACKS:
        if (name, "before") not in results:
            continue
        b, a = results[(name, "before")], results[(name, "after")]
        notes = "; ".join(n for n in (f"before: {b[2]}" if b[2] else "", f"after: {a[2]}" if a[2] else "") if n)
        lines.append(f"| {name} | {b[0]} -> {a[0]} | {b[1]} -> {a[1]} | {notes} |")
    return "\n".join(lines)


def main_jobs(args, root: Path, model: str, label: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="abuse-jobs-before-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(before), args.jobs_before_commit],
                   check=True)
    try:
        results = run(before, root, model, args.cap, args.only)
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(before)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmodel {label}; each attack capped at {args.cap:.0f} s")
    print(table(results, args.jobs_before_commit))
    print(json.dumps({f"{k[0]} | {k[1]}": v for k, v in results.items()}), file=sys.stderr)
