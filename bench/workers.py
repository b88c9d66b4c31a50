"""Worker hosts: job throughput with one and with two hosts taking jobs, on the same files.

    SANDBOX_WORKERS=<name>:<ssh port> .venv/bin/python bench/workers.py [--jobs 8] [--seconds 60] [--rounds 1]

Needs the front sandbox host deployed with one sandbox worker host (sandbox/worker-up.sh, then
`SANDBOX_WORKERS=... pyinfra inventory.py deploy.py -y`; tests/e2e/test_multihost.py does the same). The same
--jobs espeak-ng recordings of --seconds each go through POST /v1/jobs twice per round: once with only the
front's worker taking jobs (the worker host's containers stopped), once with both hosts; rounds alternate the
order. Throughput is audio hours transcribed per wall-clock hour, from the first submit to the last job
finished; scaling efficiency = throughput(2 hosts) / (2 x throughput(1 host)).

Honest caveat printed with the numbers: the sandbox hosts are containers on this one machine, so both "hosts"
share its cores (named in the output): on a 2-core machine two workers compete for the same CPUs and the
efficiency measures the sharing, not what a second real machine adds.
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_dir(_abs(__file__))))

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from sandbox.client import base_url, http_client, secrets

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".sandbox"
VHOST = "whisper.sandbox.test"


def ssh(port: int, command: str) -> str:
    return subprocess.run(["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                           "UserKnownHostsFile=/dev/null", "-i", str(STATE / "id_ed25519"), "-p", str(port),
                           "root@127.0.0.1", command], capture_output=True, text=True, check=True).stdout


def recording(folder: Path, i: int, seconds: float) -> Path:
    """About `seconds` of espeak-ng speech: different sentences per file (no cache can help)."""
    words = ("office budget team plan quarter meeting coffee kitchen review spring campaign support hiring "
             "monday friday january march desk chair lease keys city centre").split()
    sentences, total, n = [], 0.0, 0
    while total < seconds:
        sentence = " ".join(words[(i * 7 + n * 3 + k) % len(words)] for k in range(9))
        part = folder / f"r{i}-{n}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(part), sentence], check=True)
        subprocess.run(["sox", str(part), str(part.with_suffix(".p.wav")), "pad", "0", "1"], check=True)
        total += float(subprocess.run(["soxi", "-D", str(part.with_suffix(".p.wav"))], capture_output=True,
                                      text=True, check=True).stdout)
        sentences.append(str(part.with_suffix(".p.wav")))
        n += 1
    out = folder / f"recording-{i}.flac"
    subprocess.run(["sox", *sentences, str(out)], check=True)
    return out


def run_batch(client, files: list[Path]) -> tuple[float, float, dict]:
    """Submit all, wait for all: (audio seconds, wall seconds, jobs per worker host)."""
    t0 = time.monotonic()
    ids = []
    for path in files:
        with open(path, "rb") as f:
            r = client.post(base_url(VHOST) + "/v1/jobs", files={"file": f}, data={"language": "en"})
        r.raise_for_status()
        ids.append(r.json()["id"])
    audio, hosts = 0.0, {}
    for job_id in ids:
        while True:
            body = client.get(base_url(VHOST) + f"/v1/jobs/{job_id}", params={"wait": 30}).json()
            if body["status"] not in ("queued", "running"):
                break
        if body["status"] != "succeeded":
            raise SystemExit(f"job {job_id}: {body}")
        audio += body["progress"]["seconds_total"] or 0.0
        hosts[body["worker"]] = hosts.get(body["worker"], 0) + 1
    return audio, time.monotonic() - t0, hosts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    workers = [w for w in os.environ.get("SANDBOX_WORKERS", "").split(",") if w]
    if len(workers) != 1:
        raise SystemExit("set SANDBOX_WORKERS=<name>:<ssh port> (one deployed sandbox worker host)")
    worker_port = int(workers[0].partition(":")[2])
    key = secrets()["WHISPER_API_KEY"].split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        files = [recording(Path(tmp), i, args.seconds) for i in range(args.jobs)]
        results = {1: [], 2: []}
        with http_client(VHOST) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            run_batch(client, files[:2])   # warm-up: both models loaded, the API awake
            for rnd in range(args.rounds):
                for hosts in ((1, 2) if rnd % 2 == 0 else (2, 1)):
                    action = "start" if hosts == 2 else "stop"
                    ssh(worker_port, f"docker ps -aq -f name=worker- | xargs -r docker {action} >/dev/null")
                    time.sleep(3 if hosts == 1 else 15)   # a started worker loads its model first
                    audio, wall, per = run_batch(client, files)
                    results[hosts].append((audio, wall, per))
                    print(f"round {rnd + 1}, {hosts} host(s): {audio / 3600:.3f} h of audio in {wall:.1f} s "
                          f"-> {audio / wall:.1f} audio h/h; jobs per host {per}", flush=True)
            ssh(worker_port, "docker ps -aq -f name=worker- | xargs -r docker start >/dev/null")
    cores = os.cpu_count()
    thr = {h: sum(a for a, _, _ in r) / sum(w for _, w, _ in r) for h, r in results.items()}
    print(f"\nmachine: {cores} cores, shared by both sandbox hosts (containers on this one machine) and the client")
    print(f"{'hosts':>5} {'audio h/h':>10}")
    for h in (1, 2):
        print(f"{h:>5} {thr[h]:>10.1f}")
    print(f"scaling efficiency (2 hosts / 2 x 1 host): {thr[2] / (2 * thr[1]):.2f}")


if __name__ == "__main__":
    main()
