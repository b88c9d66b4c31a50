"""The hostile and unlucky requests against both services, before and after the hardening, side by side in one table.

    .venv/bin/python bench/abuse.py [--before-commit 859b999] [--cap 60] [--services faster,whisperx]
    .venv/bin/python bench/abuse.py --jobs [--jobs-before-commit e31cd06]   # the job path's trust attacks
                                                                           # (bench/abuse_jobs.py; needs redis-server)

For each attack and service: the HTTP status, the time until the server refused (or answered), the server's
peak RSS during the attack (and its growth over the RSS the attack started from) and the peak disk used in the
server's temp folder (STT_TMP_DIR and TMPDIR both point there). "after" is this checkout's code; "before" is the
code of --before-commit (the last commit before the hardening), checked out with `git worktree add` into a
temporary folder and run from there, in the same run, with the same settings:

    STT_API_KEYS=<key>  STT_MAX_CONCURRENCY=1  STT_MAX_QUEUE=0  STT_MAX_AUDIO_SECONDS=600  STT_CPU_THREADS=2
    HF_HUB_OFFLINE=1 (no hub here: a junk hub id fails at once instead of downloading)

(the before code ignores the knobs it does not have). STT_MAX_AUDIO_SECONDS=600 as the hardening tests set it:
the default 4 h would accept the hour of silence, bounded then only by the compose file's tmpfs.

faster runs in this interpreter's environment (.venv); whisperx in .venv-ml when it exists (else its rows say so).
Every attack is bounded by --cap seconds of wall time ("> 60 s" in the table); a server still busy afterwards is
restarted so the next attack starts from an idle one. Loopback only. Uses tests/support/hostile.py's request builders.
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

# run as a script, bench/ is sys.path[0]: keep its modules from shadowing the stdlib
_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_abs(__file__)))
_sys.path.append(_abs(_dir(_abs(__file__)) + "/../tests"))   # support/hostile.py

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import httpx
import psutil

from support import hostile
from shipped_model import bench_model

ROOT = Path(__file__).resolve().parents[1]
KEY = "abuse-bench-key"
PATH = "/v1/audio/transcriptions"
MIB = 1024 * 1024
TEXT = ("the weather was cold this morning but the train arrived on time at the station. "
        "please send me the report about the new office before lunch. ")
SERVICES = {
    # service: (python, PYTHONPATH folders, module)
    "faster": (Path(sys.executable), ("images/common", "images/faster"), "faster_server"),
    "whisperx": (ROOT / ".venv-ml/bin/python", ("images/common", "images/diarize", "images/whisperx"),
                 "whisperx_server"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_bytes(folder: Path) -> int:
    """Blocks really used under `folder` (a sparse memmap counts what was written, not its length)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def tree_rss(proc: psutil.Process) -> int:
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Server:
    def __init__(self, service: str, version: str, code: Path, work: Path, model: str):
        self.service, self.version, self.code, self.model = service, version, code, model
        self.work = work / f"{service}-{version}"
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def start(self, timeout: float = 300) -> None:
        python, paths, module = SERVICES[self.service]
        if self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)
        self.tmp = self.work / "tmp"
        self.tmp.mkdir(parents=True)
        (self.work / "models").mkdir()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STT_") and k not in ("HF_TOKEN", "PYTHONPATH")}
        env.update({
            "PYTHONPATH": os.pathsep.join(str(self.code / p) for p in paths),
            "HOST": "127.0.0.1", "PORT": str(port), "STT_MODEL": self.model,
            "STT_MODELS_DIR": str(self.work / "models"), "STT_TMP_DIR": str(self.tmp), "TMPDIR": str(self.tmp),
            "STT_API_KEYS": KEY, "STT_MAX_CONCURRENCY": "1", "STT_MAX_QUEUE": "0", "STT_MAX_AUDIO_SECONDS": "600",
            "STT_CPU_THREADS": "2", "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0",
            "ACCESS_LOG": "0", "LOG_LEVEL": "warning",
        })
        self.log = open(self.work / "server.log", "ab")
        self.proc = subprocess.Popen([str(python), "-m", module], env=env, cwd=str(self.work), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} {self.version} exited: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    self.settle()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.service} {self.version} not ready in {timeout:.0f} s: {self.log_tail()}")

    def settle(self, cap: float = 60.0) -> None:
        """Wait until the server's RSS stops growing: /health says 200 once the ASR model is loaded, but WhisperX
        then warms its diarization backend in the background (about +150 MiB in the first second or two), which
        the first attacks would otherwise be charged with (the +82 MiB once measured for the field flood)."""
        last, steady, t0 = tree_rss(self.ps), 0, time.monotonic()
        while steady < 4 and time.monotonic() - t0 < cap:
            time.sleep(0.5)
            now = tree_rss(self.ps)
            steady = steady + 1 if abs(now - last) < 2 * MIB else 0
            last = now

    def log_tail(self) -> str:
        return (self.work / "server.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {KEY}"}).text

    def busy(self) -> bool:
        try:
            return hostile.metric(self.metrics(), "stt_inference_in_progress") > 0
        except httpx.HTTPError:
            return True

    def wait_idle(self, cap: float) -> Optional[float]:
        """Seconds until no job runs, None if one still runs after `cap`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < cap:
            if not self.busy():
                return time.monotonic() - t0
            time.sleep(0.2)
        return None


class Sampler(threading.Thread):
    """Peak RSS of the server (and its children) and peak disk in its temp folder, every 20 ms."""

    def __init__(self, srv: Server):
        super().__init__(daemon=True)
        self.srv, self.stop_ev = srv, threading.Event()
        self.rss0 = tree_rss(srv.ps)
        self.rss = self.rss0
        self.disk = 0

    def run(self):
        while not self.stop_ev.is_set():
            self.rss = max(self.rss, tree_rss(self.srv.ps))
            self.disk = max(self.disk, disk_bytes(self.srv.tmp))
            self.stop_ev.wait(0.02)

    def reset(self):
        """Measure from now on only (the attack's own request, not what it set up)."""
        self.rss0 = self.rss = tree_rss(self.srv.ps)
        self.disk = disk_bytes(self.srv.tmp)

    def finish(self):
        self.stop_ev.set()
        self.join()


@dataclass
class Result:
    status: str = "-"
    seconds: str = "-"
    rss: str = "-"
    disk: str = "-"
    notes: List[str] = field(default_factory=list)


def answer_status(a: hostile.Answer, cap: float) -> tuple[str, str]:
    if a.status == 0:
        return "none", f"> {cap:.0f} s"
    code = ""
    try:
        code = " " + a.error.get("code", "") if a.status >= 400 else ""
    except Exception:
        pass
    return f"{a.status}{code}".strip(), f"{a.seconds:.2f} s"


# ---------------------------------------------------------------- the attacks: (srv, audio, cap) -> (status, time, note)

def decode_bomb(srv, audio, cap):
    a = hostile.post(srv.url, PATH, hostile.multipart(file=audio["hour"].read_bytes()), key=KEY, timeout=cap)
    return (*answer_status(a, cap), "")


def field_flood(srv, audio, cap):
    body = hostile.multipart([("extra", b"x" * MIB)] * 400, file=b"RIFF")
    a = hostile.post(srv.url, PATH, body, key=KEY, timeout=cap)
    return (*answer_status(a, cap), f"{a.sent / MIB:.0f} of {len(body) / MIB:.0f} MiB sent")


def small_fields(srv, audio, cap):
    body = hostile.multipart([("extra", b"1")] * 10000, file=audio["short"].read_bytes())
    a = hostile.post(srv.url, PATH, body, key=KEY, timeout=cap)
    return (*answer_status(a, cap), "")


def audio_seconds_done(srv) -> float:
    """stt_audio_seconds_total over all its labels: it grows only when a job ran to its end."""
    return sum(float(ln.split()[-1]) for ln in srv.metrics().splitlines() if ln.startswith("stt_audio_seconds_total"))


def hang_up(srv, audio, cap):
    """The whole request (10 min of speech) sent, the connection closed once the job runs: time until the slot is
    free again, and whether the job ran to its end anyway."""
    body = hostile.multipart(file=audio["long10"].read_bytes())
    done0 = audio_seconds_done(srv)
    host, port, head = hostile._request_head(srv.url, PATH, len(body), KEY, {})
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head + body)
        deadline = time.monotonic() + 30
        while not srv.busy():
            if time.monotonic() > deadline:
                return "-", "-", "the job never started"
            time.sleep(0.05)
        time.sleep(0.5)
    idle = srv.wait_idle(cap)
    if idle is None:
        return "(hung up)", f"> {cap:.0f} s", "the job still ran at the cap"
    if audio_seconds_done(srv) > done0:
        return "(hung up)", f"slot free {idle:.1f} s after", "the job ran to its end"
    stopped = hostile.metric(srv.metrics(), "stt_jobs_stopped_total", 'reason="disconnected"')
    return "(hung up)", f"slot free {idle:.1f} s after", f"the job stopped (jobs stopped for a hang-up: {stopped:.0f})"


def junk_model(srv, audio, cap):
    a = hostile.post(srv.url, PATH, hostile.multipart([("model", b"junk/model")], file=audio["short"].read_bytes()),
                     key=KEY, timeout=cap)
    return (*answer_status(a, cap), "")


def junk_models_200(srv, audio, cap):
    lines0 = len(srv.metrics().splitlines())
    t0, statuses, done = time.monotonic(), {}, 0
    wav = audio["short"].read_bytes()
    for i in range(200):
        left = cap - (time.monotonic() - t0)
        if left <= 0:
            break
        a = hostile.post(srv.url, PATH, hostile.multipart([("model", f"junk/model-{i}".encode())], file=wav),
                         key=KEY, timeout=left)
        s, _ = answer_status(a, cap)
        statuses[s] = statuses.get(s, 0) + 1
        done += 1
    took = time.monotonic() - t0
    lines = len(srv.metrics().splitlines())
    status = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    seconds = f"{took / max(done, 1):.2f} s each" + ("" if done == 200 else f" ({done} in {cap:.0f} s)")
    return status, seconds, f"/metrics {lines0} -> {lines} lines"


def nul_model(srv, audio, cap):
    a = hostile.post(srv.url, PATH, hostile.multipart([("model", b"x\x00y")], file=audio["short"].read_bytes()),
                     key=KEY, timeout=cap)
    r = httpx.get(srv.url + "/v1/models/x%00y", headers={"Authorization": f"Bearer {KEY}"}, timeout=cap)
    return (*answer_status(a, cap), f"GET /v1/models/x%00y: {r.status_code}")


def queue_full(srv, audio, cap, mark=lambda: None):
    """One job holds the only slot (queue 0); then the hour of silence arrives: refused before or after decoding?
    Peaks are measured from the moment the slot is taken (the holder's own upload and RSS before it excluded)."""
    holder = threading.Thread(target=hostile.post, args=(srv.url, PATH, hostile.multipart(file=audio["long"].read_bytes())),
                              kwargs={"key": KEY, "timeout": cap}, daemon=True)
    holder.start()
    deadline = time.monotonic() + 30
    while not srv.busy():
        if time.monotonic() > deadline:
            return "-", "-", "the slot holder never started"
        time.sleep(0.05)
    mark()
    a = hostile.post(srv.url, PATH, hostile.multipart(file=audio["hour"].read_bytes()), key=KEY, timeout=cap)
    holder.join(cap)
    return (*answer_status(a, cap), "")


ATTACKS: List[tuple[str, Callable]] = [
    ("decode bomb: 1 h of silence, 0.6 MB FLAC", decode_bomb),
    ("field flood: 400 x 1 MB fields `extra`", field_flood),
    ("flood of small fields: 10 000 x `extra=1`", small_fields),
    ("junk model name", junk_model),
    ("200 junk model names, then /metrics", junk_models_200),
    ("NUL byte in model", nul_model),
    ("queue full, then the 1 h FLAC", queue_full),
    ("client hangs up mid-transcription", hang_up),   # last: before the hardening the job keeps the slot
]


def run_attack(srv: Server, fn: Callable, audio: dict, cap: float) -> Result:
    res = Result()
    if not srv.alive():
        srv.start()
    sampler = Sampler(srv)
    sampler.start()
    try:
        kw = {"mark": sampler.reset} if fn is queue_full else {}
        res.status, res.seconds, note = fn(srv, audio, cap, **kw)
        if note:
            res.notes.append(note)
    except Exception as e:   # an attack that breaks the bench's client is a result too
        res.status, res.seconds = "error", "-"
        res.notes.append(f"{type(e).__name__}: {str(e)[:80]}")
    finally:
        sampler.finish()
    res.rss = f"{sampler.rss / MIB:.0f} (+{(sampler.rss - sampler.rss0) / MIB:.0f})"
    res.disk = f"{sampler.disk / MIB:.1f}"
    if not srv.alive():
        res.notes.append("server died")
    elif srv.wait_idle(10) is None:
        res.notes.append("still busy: restarted")
        srv.stop()
    return res


def make_audio(d: Path) -> dict:
    one = d / "one.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(one), TEXT], check=True)
    return {"short": one, "long": hostile.repeat(one, d / "long.wav", 6),   # ~1 min of speech
            "long10": hostile.repeat(one, d / "long10.wav", 60),               # ~10 min
            "hour": hostile.silence_flac(d / "hour.flac", 3600)}


def before_tree(commit: str, work: Path) -> Path:
    path = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), commit], check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-commit", default="859b999")
    ap.add_argument("--cap", type=float, default=60.0, help="wall-time bound of each attack, seconds")
    ap.add_argument("--services", default="faster,whisperx")
    ap.add_argument("--only", default="", help="run only the attacks whose name contains this")
    ap.add_argument("--jobs", action="store_true", help="the job path's attacks instead (bench/abuse_jobs.py)")
    ap.add_argument("--jobs-before-commit", default="e31cd06", help="the code before the job path's hardening")
    args = ap.parse_args()

    model, label = bench_model()
    if args.jobs:
        import abuse_jobs
        return abuse_jobs.main_jobs(args, ROOT, model, label)
    work = Path(tempfile.mkdtemp(prefix="abuse-bench-"))
    before = before_tree(args.before_commit, work)
    audio_dir = work / "audio"
    audio_dir.mkdir()
    audio = make_audio(audio_dir)
    results: Dict[tuple, Result] = {}
    try:
        for service in args.services.split(","):
            for version, code in (("before", before), ("after", ROOT)):
                srv = Server(service, version, code, work, model)
                if not SERVICES[service][0].exists():
                    for name, _ in ATTACKS:
                        results[(name, service, version)] = Result(notes=[f"{SERVICES[service][0]} missing"])
                    continue
                try:
                    srv.start()
                except RuntimeError as e:
                    for name, _ in ATTACKS:
                        results[(name, service, version)] = Result(notes=[f"server did not start: {str(e)[:60]}"])
                    continue
                try:
                    for name, fn in ATTACKS:
                        if args.only not in name:
                            continue
                        print(f"# {service} {version}: {name}", file=sys.stderr, flush=True)
                        results[(name, service, version)] = r = run_attack(srv, fn, audio, args.cap)
                        print(f"#   {r}", file=sys.stderr, flush=True)
                finally:
                    srv.stop()
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmodel {label}; before = {args.before_commit}, after = this checkout; each attack capped at "
          f"{args.cap:.0f} s\n")
    print("| attack | service | status before -> after | time to refuse before -> after "
          "| peak RSS MiB (growth) before -> after | peak temp disk MiB before -> after | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, _ in ATTACKS:
        if args.only not in name:
            continue
        for service in args.services.split(","):
            b, a = results.get((name, service, "before"), Result()), results.get((name, service, "after"), Result())
            notes = "; ".join([f"before: {n}" for n in b.notes] + [f"after: {n}" for n in a.notes])
            print(f"| {name} | {service} | {b.status} -> {a.status} | {b.seconds} -> {a.seconds} "
                  f"| {b.rss} -> {a.rss} | {b.disk} -> {a.disk} | {notes} |")


if __name__ == "__main__":
    main()
