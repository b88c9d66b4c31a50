"""Backups and the rebuild from one, on the deployed sandbox (make demo; SANDBOX_* select yours).

With a jobs folder of about `--gb` GB (finished jobs of 10 MB of audio each, as a busy month leaves them):
- a backup's size and time on the host, finished jobs' audio left out (the default) and kept (`backup_uploads`),
  rounds alternating, medians;
- the pull of the big archive to this machine (`pyinfra inventory.py backup.py`);
- with --rebuild: the sandbox destroyed and rebuilt from each archive in turn, small then big, with the normal
  deploy plus restore_from: time from the fresh host to the first 200 through nginx, and its parts (the archive's
  upload and extraction, the Redis load, the image builds);
- the images a fresh host builds, as `docker save` tarballs (their size: what feeding them to the host instead
  would move).

    .venv/bin/python bench/backup.py [--gb 1] [--rounds 2] [--rebuild]

Leaves the sandbox deployed, without the bench's jobs.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
STATE = REPO / ".sandbox"
PYINFRA = str(REPO / ".venv/bin/pyinfra")
CONFIG = "/etc/whisper-platform/backup.json"
TOOL = "/opt/whisper-platform/bin/whisper-backup"
JOB_MB = 10

FILL = r'''
import json, os, subprocess, sys, uuid
jobs_dir, count, mb, uid, sock = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
env = dict(os.environ, REDISCLI_AUTH=[l.split("=", 1)[1].strip() for l in open("/etc/whisper-platform/jobs.env")
                                      if l.startswith("REDIS_PASSWORD=")][0])
ids = []
for _ in range(count):
    job = "bench" + uuid.uuid4().hex[5:]
    folder = os.path.join(jobs_dir, "faster", job)
    os.makedirs(folder, mode=0o750)
    with open(os.path.join(folder, "audio"), "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump({"text": "a finished meeting " * 50, "segments": []}, f)
    for path in (folder, os.path.join(folder, "audio"), os.path.join(folder, "result.json")):
        os.chown(path, uid, uid)
    ids.append(job)
commands = "".join(f"HSET rq:job:{job} status finished\n" for job in ids)
subprocess.run(["redis-cli", "-s", sock], input=commands, text=True, env=env,
               check=True, capture_output=True)
print(sum(os.path.getsize(os.path.join(jobs_dir, "faster", j, "audio")) for j in ids))
'''


def ssh(command: str, check: bool = True, timeout: int = 1800) -> str:
    proc = subprocess.run(
        ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-i", str(STATE / "id_ed25519"), "-p", os.environ.get("SANDBOX_SSH_PORT", "2222"), "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"ssh {command[:80]!r}: {proc.stdout}{proc.stderr}")
    return proc.stdout


def pyinfra(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([PYINFRA, "inventory.py", *args], cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "DEPLOY_TARGET": "sandbox"})
    if proc.returncode != 0:
        raise SystemExit(f"pyinfra {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.monotonic() - started, proc.stdout + proc.stderr


def create(uploads: bool) -> dict:
    """One backup on the host with the deployed settings, finished jobs' audio in or out."""
    edit = f"import json;c=json.load(open('{CONFIG}'));c['uploads']={uploads};json.dump(c,open('/root/bench-backup.json','w'))"
    ssh(f"python3 -c \"{edit}\"")
    return json.loads(ssh(f"python3 {TOOL} create --config /root/bench-backup.json").splitlines()[-1])


def first_200(deadline_s: float = 900) -> None:
    from sandbox.client import base_url, http_client, secrets

    s = secrets()
    base = base_url("whisper.sandbox.test")
    started = time.monotonic()
    with http_client("whisper.sandbox.test") as client:
        while client.get(f"{base}/v1/models", auth=(s["WHISPER_BASIC_AUTH_USER"],
                                                     s["WHISPER_BASIC_AUTH_PASSWORD"])).status_code != 200:
            if time.monotonic() - started > deadline_s:
                raise SystemExit("no 200 through nginx")
            time.sleep(1)


def rebuild(archive: Path, identity: Path, secrets_file: str) -> dict:
    """Destroy the sandbox, bring up a fresh one, restore with the deploy; times and the restore's parts."""
    subprocess.run(["bash", "sandbox/down.sh"], cwd=REPO, check=True, capture_output=True)
    STATE.mkdir(exist_ok=True)
    shutil.copy(identity, STATE / "backup-identity.txt")
    user = re.search(r"^WHISPER_BASIC_AUTH_USER=(.*)$", secrets_file, re.M).group(1)
    (STATE / "secrets.env").write_text(f"WHISPER_BASIC_AUTH_USER={user}\n")
    try:
        started = time.monotonic()
        subprocess.run(["bash", "sandbox/up.sh"], cwd=REPO, check=True, capture_output=True)
        up = time.monotonic() - started
        deploy_started = time.time()
        deploy, output = pyinfra("deploy.py", "-y", "--data", f"restore_from={archive}", "--data",
                                 f"restore_identity={identity}")
    finally:
        (STATE / "secrets.env").write_text(secrets_file)
    first_200()
    total = time.monotonic() - started
    marker = json.loads(ssh("cat /var/lib/whisper-platform/restore.json"))

    def at(step: str) -> float:
        return calendar.timegm(time.strptime(marker[step], "%Y-%m-%dT%H:%M:%SZ")) - deploy_started

    builds = {tag.split(":")[0]: int(m) * 60 + int(s)
              for tag, m, s in re.findall(r"build (\S+): done in (\d+)m(\d+)s", output)}
    return {"fresh host to first 200 s": round(total, 1), "host up s": round(up, 1), "deploy s": round(deploy, 1),
            "restore files done at s": round(at("files"), 1), "redis loaded at s": round(at("redis"), 1),
            "builds": builds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    cfg = json.loads(ssh(f"cat {CONFIG}"))
    count = max(1, round(args.gb * 1024 / JOB_MB))
    print(f"filling {cfg['jobs_dir']}/faster with {count} finished jobs of {JOB_MB} MB ...", flush=True)
    started = time.monotonic()
    fill_args = f"{cfg['jobs_dir']} {count} {JOB_MB} 10001 {cfg['redis_socket']}"
    audio = int(ssh(f"python3 - {fill_args} <<'EOF'\n{FILL}\nEOF").strip())
    print(f"  {audio / 1e9:.2f} GB of audio in {time.monotonic() - started:.0f} s")
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.rounds):
        for uploads in (False, True):
            runs[uploads].append(create(uploads))
    print("\n| backup (on the host) | archive size | time (median) | members |")
    print("| --- | --- | --- | --- |")
    for uploads, label in ((False, "finished jobs' audio left out (default)"), (True, "with `backup_uploads`")):
        r = runs[uploads]
        print(f"| {label} | {statistics.median(x['bytes'] for x in r) / 1e6:.1f} MB | "
              f"{statistics.median(x['seconds'] for x in r):.1f} s | {r[-1]['members']} |")

    # the operator's pull of the big archive, then the rebuilds
    pyinfra("deploy.py", "-y", "--data", "backup_uploads=True")
    pulled = {}
    seconds, _ = pyinfra("backup.py", "-y")
    pulled[True] = max((STATE / "backups").glob("*.tar.age"), key=lambda p: p.stat().st_mtime)
    print(f"\npull of the {pulled[True].stat().st_size / 1e9:.2f} GB archive (pyinfra inventory.py backup.py, "
          f"backup included): {seconds:.1f} s")
    pyinfra("deploy.py", "-y")
    pyinfra("backup.py", "-y")
    pulled[False] = max((STATE / "backups").glob("*.tar.age"), key=lambda p: p.stat().st_mtime)

    images = ssh("docker images --format '{{.Repository}}:{{.Tag}}' | grep ':src-'").split()
    for tag in images:
        started = time.monotonic()
        size = int(ssh(f"docker save {tag} | wc -c"))
        print(f"image {tag}: docker save {size / 1e9:.2f} GB in {time.monotonic() - started:.0f} s")

    if args.rebuild:
        keep = Path(tempfile.mkdtemp(prefix="bench-backup-"))
        identity = Path(shutil.copy(STATE / "backup-identity.txt", keep / "identity.txt"))
        secrets_file = (STATE / "secrets.env").read_text()
        archives = {k: Path(shutil.copy(v, keep / v.name)) for k, v in pulled.items()}
        print("\n| rebuild from | archive | fresh host to first 200 | deploy | restore files done | Redis loaded "
              "| image builds |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for uploads in (False, True):
            r = rebuild(archives[uploads], identity, secrets_file)
            print(f"| {'1 GB archive' if uploads else 'default archive'} | {archives[uploads].stat().st_size / 1e6:.0f} MB"
                  f" | {r['fresh host to first 200 s']} s | {r['deploy s']} s | {r['restore files done at s']} s "
                  f"| {r['redis loaded at s']} s | {', '.join(f'{k} {v} s' for k, v in r['builds'].items())} |",
                  flush=True)
        shutil.rmtree(keep)
    # the bench's jobs out again (after a rebuild they came back with the archive)
    ssh(f"cd {cfg['jobs_dir']}/faster && ls -d bench* 2>/dev/null | while read j; do "
        f"REDISCLI_AUTH=$(sed -n 's/^REDIS_PASSWORD=//p' /etc/whisper-platform/jobs.env) "
        f"redis-cli -s {cfg['redis_socket']} DEL rq:job:$j >/dev/null; rm -rf $j; done; rm -f /root/bench-backup.json")


if __name__ == "__main__":
    main()
