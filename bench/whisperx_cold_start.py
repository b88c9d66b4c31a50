"""WhisperX's cold start: the first diarized request to a server process that was not running, against a warm one.

    .venv-ml/bin/python bench/whisperx_cold_start.py [--rounds 3] [--before main] [--threads 2] [--evict]
    .venv/bin/python bench/whisperx_cold_start.py --sandbox [--rounds 3] [--wake-delay 5]   # deployed sandbox

Each round starts the server from source (``base``, int8, offline diarizer, ``HF_HUB_OFFLINE=1``), waits for its
/health as the autostart proxy does, sends the real two-person phone call that pyannote.audio's wheel ships (30 s,
``diarize=true``, ``language=en``), then the same request again warm. Printed per code revision (``--before``: a git
revision whose images/ are exported to a temporary folder and run the same way, side by side, rounds alternating):
seconds to /health, first answer (from the process start), warm answer, cold minus warm, and the server's own
``stt_startup_seconds`` phases (import, asr_model, diarizer, first_inference: seconds from the process start).

``--sandbox`` measures the same through the deployed sandbox instead (nginx, the autostart proxy, the container:
``docker compose stop`` on the sandbox host, then the request; ``--wake-delay S``: the page's wake request S seconds
before the upload, with the deploy's ``autostart_wake_path=/_autostart/wake``).

``--evict`` also runs each revision once with the model files and the Python packages the server imports dropped
from the page cache first (``posix_fadvise(DONTNEED)`` on this checkout's files only): what loading costs from disk.
Without ``--sandbox`` the container's own start (``docker compose up``) is not in these numbers.
Timings on a shared machine are noisy: compare the revisions within one run.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import requests  # noqa: E402

from diarized_transcripts import phone_call  # noqa: E402
from multilingual import Server  # noqa: E402

PACKAGES = ("torch", "ctranslate2", "faster_whisper", "whisperx", "transformers", "pyannote", "lightning",
            "resemblyzer", "silero_vad", "onnxruntime", "numpy", "scipy", "sklearn", "tokenizers", "torchaudio",
            "fastapi", "pydantic", "pandas", "nltk", "av")


def evict(paths) -> int:
    """Drop these files' pages from the page cache (files this checkout owns); bytes asked."""
    n = 0
    for top in paths:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                        n += os.fstat(f.fileno()).st_size
                except OSError:
                    pass
    return n


def startup_phases(url: str) -> dict:
    text = requests.get(url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^stt_startup_seconds\{phase="([^"]+)"\} ([0-9.e+-]+)$', text, re.M)}


def one_round(root: Path, model: Path, threads: int, audio) -> dict:
    t0 = time.perf_counter()
    srv = Server("whisperx", model, threads, model.parent, {"STT_DIARIZATION_BACKEND": "offline"}, root=root,
                 ready_timeout=1200)
    ready = time.perf_counter() - t0
    try:
        def ask() -> float:
            t = time.perf_counter()
            with open(audio.wav, "rb") as f:
                r = requests.post(srv.url + "/transcribe", files={"file": (audio.wav.name, f)},
                                  data={"language": "en", "diarize": "true"}, timeout=600)
            r.raise_for_status()
            return time.perf_counter() - t
        first = ready + ask()
        warm = ask()
        return {"ready": ready, "first": first, "warm": warm, **startup_phases(srv.url)}
    finally:
        srv.stop()


def sandbox_rounds(rounds: int, audio, wake_delay: float | None) -> list[dict]:
    """Through the deployed sandbox (make sandbox && make deploy; SANDBOX_* names it): nginx -> autostart proxy ->
    container. Each round stops the WhisperX compose project on the sandbox host, then sends the diarized request
    (cold: the proxy starts the container, waits for /health, forwards), then the same warm. With ``wake_delay``,
    the page's wake request goes first (the deploy's ``autostart_wake_path``) and the upload ``wake_delay`` seconds
    later, as a user picking a file."""
    from sandbox.client import NAME, base_url, http_client, secrets
    vhost = "whisperx.sandbox.test"
    auth = {"Authorization": f"Bearer {secrets()['WHISPER_API_KEY']}"}

    def on_host(cmd: str) -> str:
        return subprocess.run(["docker", "exec", NAME, "sh", "-c", cmd], capture_output=True, text=True,
                              check=True).stdout

    def scrape(port: int, name: str) -> dict:
        text = on_host(f"python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}/metrics')"
                       f".read().decode())\"")
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            rf'^{name}\{{[^}}]*?(?:phase|host)="([^"]+)"[^}}]*\}} ([0-9.e+-]+)$', text, re.M)}

    out = []
    with http_client(vhost) as http:
        def ask() -> float:
            t = time.perf_counter()
            with open(audio.wav, "rb") as f:
                r = http.post(base_url(vhost) + "/transcribe", headers=auth, files={"file": (audio.wav.name, f)},
                              data={"language": "en", "diarize": "true"})
            r.raise_for_status()
            return time.perf_counter() - t
        ask()   # the image's first run on this host (page cache, the proxy's state)
        for _ in range(rounds):
            on_host("cd /opt/whisperx && (docker compose stop -t 10 2>/dev/null || docker-compose stop -t 10)")
            time.sleep(6)   # past the proxy's re-check interval: it knows the service is down
            up_before = scrape(8890, "docker_autostart_compose_up_duration_seconds_sum")
            if wake_delay is not None:
                w = http.get(base_url(vhost) + "/_autostart/wake", headers=auth)
                assert w.status_code in (200, 202), w.text
                time.sleep(wake_delay)
            first = ask() + (wake_delay or 0.0)
            warm = ask()
            up = {k: v - up_before.get(k, 0.0) for k, v in
                  scrape(8890, "docker_autostart_compose_up_duration_seconds_sum").items()}
            out.append({"first": first, "warm": warm, "ready": float("nan"),
                        "compose_up": next((v for k, v in up.items() if k.startswith("whisperx.")), float("nan")),
                        **scrape(8002, "stt_startup_seconds")})
            print("sandbox", {k: round(v, 2) for k, v in out[-1].items()}, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", help="a git revision to measure side by side (its images/ exported)")
    ap.add_argument("--evict", action="store_true", help="also one round per revision from a cold page cache")
    ap.add_argument("--sandbox", action="store_true", help="through the deployed sandbox: nginx, proxy, container")
    ap.add_argument("--wake-delay", type=float, help="--sandbox: the page's wake request this long before the upload")
    a = ap.parse_args()
    if a.sandbox:
        audio = phone_call()
        rs = sandbox_rounds(a.rounds, audio, a.wake_delay)
        keys = sorted({k for r in rs for k in r})
        med = {k: statistics.median(r[k] for r in rs) for k in keys}
        print(f"\nthrough nginx and the proxy ({a.rounds} rounds, medians; load average {os.getloadavg()[0]:.1f}"
              + (f"; wake request {a.wake_delay:g} s before the upload" if a.wake_delay is not None else "") + "):")
        print(f"first answer {med['first']:.1f} s, warm {med['warm']:.1f} s, cold - warm {med['first'] - med['warm']:.1f} s;"
              f" compose up {med['compose_up']:.1f} s; the service's start: "
              + ", ".join(f"{k} {med[k]:.1f} s" for k in keys if k not in ("first", "warm", "ready", "compose_up")))
        return
    from sandbox.models import base
    model, audio = base(), phone_call()
    trees = {"this checkout": ROOT}
    tmp = None
    if a.before:
        tmp = tempfile.TemporaryDirectory(prefix="wx-before-")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.before, "images"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        trees = {a.before: Path(tmp.name), **trees}
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {a.threads} threads, model base, "
          f"phone call {audio.duration:.0f} s, diarize=true", flush=True)
    results: dict = {k: [] for k in trees}
    evicted: dict = {}
    for i in range(a.rounds):
        for name, root in (trees.items() if i % 2 == 0 else reversed(list(trees.items()))):
            results[name].append(one_round(root, model, a.threads, audio))
            print(name, {k: round(v, 2) for k, v in results[name][-1].items()}, flush=True)
    if a.evict:
        site = Path(next(p for p in sys.path if p.endswith("site-packages")))
        for name, root in trees.items():
            n = evict([str(model)] + [str(site / p) for p in PACKAGES if (site / p).exists()])
            evicted[name] = one_round(root, model, a.threads, audio)
            print(name, f"page cache dropped ({n / 2**30:.1f} GiB asked)",
                  {k: round(v, 2) for k, v in evicted[name].items()}, flush=True)
    keys = ["ready", "first", "warm"]
    phases = sorted({k for rs in results.values() for r in rs for k in r if k not in keys})
    print("\n| code | page cache | /health 200 (s) | first answer (s) | warm answer (s) | cold - warm (s) | "
          + " | ".join(f"{p} (s)" for p in phases) + " |")
    print("|" + " --- |" * (6 + len(phases)))
    rows = [(name, "warm", rs) for name, rs in results.items()] + [(name, "dropped", [r]) for name, r in evicted.items()]
    for name, cache, rs in rows:
        med = {k: statistics.median(r[k] for r in rs if k in r) if any(k in r for r in rs) else float("nan")
               for k in keys + phases}
        print(f"| {name} | {cache} | {med['ready']:.1f} | {med['first']:.1f} | {med['warm']:.1f} | "
              f"{med['first'] - med['warm']:.1f} | " + " | ".join(f"{med[p]:.1f}" for p in phases) + " |")
    print(f"\nmedians of {a.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
