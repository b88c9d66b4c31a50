"""Issue 14 on two sandbox hosts: the front (the sandbox host) and a worker host on a private Docker network of
both (sandbox/worker-up.sh). One deploy adds the worker host, jobs spread over both hosts, a worker host killed
mid-job has its job finished on the front, the host rejoins by itself once it is back, and one deploy without it
removes it: it takes no job from then on.

Every request of the tests goes to 127.0.0.1 (nginx's published port, the hosts' SSH ports); only the two
sandbox hosts talk to each other over their private network (the link). Runs after test_jobs.py and leaves the
front as it found it (no worker hosts).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from sandbox.client import base_url, http_client

from .conftest import REPO, SANDBOX, STATE, pyinfra, speech, ssh

pytestmark = pytest.mark.sandbox

WORKER = os.environ.get("SANDBOX_WORKER_NAME", f"{SANDBOX}-w1")
WORKER_PORT = int(os.environ.get("SANDBOX_WORKER_SSH_PORT", "2233"))
FRONT = "sandbox"          # the front's name in the inventory: what a job's `worker` field says for it
VHOST = "whisper.sandbox.test"
FRONT_WORKER = "faster-whisper-worker"   # the front's own RQ worker container


def on_worker(command: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", "-i", str(STATE / "id_ed25519"), "-p", str(WORKER_PORT), "root@127.0.0.1",
         command], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"ssh {WORKER} {command!r} failed: {proc.stdout}{proc.stderr}")
    return proc


def deploy(workers: str):
    return pyinfra("-y", env={"SANDBOX_WORKERS": workers})


SHORT = ["the meeting starts at ten in the small room", "please bring the budget for the next quarter"]
LONG = [f"item {n} on the agenda is the plan for the new office and the budget of the team" for n in
        ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")] * 4


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multihost")
    return {"short": speech(folder, "short", SHORT), "long": speech(folder, "long", LONG)}


@pytest.fixture(scope="module")
def client(deployed):
    key = deployed["secrets"]["WHISPER_API_KEY"].split(",")[0]
    with http_client(VHOST) as c:
        c.headers["Authorization"] = f"Bearer {key}"
        yield c


@pytest.fixture(scope="module")
def worker_host(deployed):
    subprocess.run(["bash", "sandbox/worker-up.sh", WORKER, str(WORKER_PORT)], cwd=REPO, check=True)
    yield WORKER
    ssh(f"docker start {FRONT_WORKER}", check=False)
    deploy("")   # the front without worker hosts, as the following test files expect it
    if os.environ.get("SANDBOX_REUSE") != "1":   # SANDBOX_REUSE=1 keeps the worker host too, for the next run
        subprocess.run(["bash", "sandbox/worker-down.sh", "--all", WORKER], cwd=REPO, check=True)


def submit(client, path: str) -> str:
    with open(path, "rb") as f:
        r = client.post(base_url(VHOST) + "/v1/jobs", files={"file": f}, data={"language": "en"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def status(client, job_id: str, wait: float = 0) -> dict:
    r = client.get(base_url(VHOST) + f"/v1/jobs/{job_id}", params={"wait": wait})
    assert r.status_code == 200, r.text
    return r.json()


def finished(client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(client, job_id, wait=20)
        if body["status"] not in ("queued", "running"):
            return body
    raise AssertionError(f"job {job_id} still {body['status']} after {timeout} s: {body}")


def metrics(client) -> str:
    r = client.get(base_url(VHOST) + "/metrics")   # through nginx and the autostart proxy, with the API key
    assert r.status_code == 200, r.text
    return r.text


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(part in m.group(1).split(",") for part in want.split(",")):
            return float(m.group(2))
    return 0.0


def wait_registered(client, timeout: float = 240) -> None:
    """Until an RQ worker of the worker host is registered in the front's Redis (what /metrics shows)."""
    deadline = time.monotonic() + timeout
    while metric(metrics(client), "stt_job_workers", worker=WORKER) < 1:
        assert time.monotonic() < deadline, on_worker("docker ps -a; docker logs --tail 30 faster-whisper-worker-1 2>&1",
                                                      check=False).stdout
        time.sleep(2)


def front_worker(action: str) -> None:
    ssh(f"docker {action} {FRONT_WORKER}")


def test_one_deploy_adds_a_worker_host_and_jobs_spread_over_both(worker_host, client, audio):
    out = deploy(f"{WORKER}:{WORKER_PORT}").output
    # no link secret in the deploy's output: the worker's Redis password, any private key
    for secret in (STATE / "link").glob("*.redis-password"):
        assert secret.read_text().strip() not in out
    for key in (STATE / "link").glob("*.key"):
        assert key.read_text().splitlines()[1] not in out
    # a second run over both hosts changes nothing
    assert pyinfra("-y", "--json", env={"SANDBOX_WORKERS": f"{WORKER}:{WORKER_PORT}"}).changed() == 0
    # the worker host listens on nothing new; the front's link ports are on its link address only
    listening = [line.split()[3] for line in on_worker("ss -ltnH").stdout.splitlines() if line.strip()]
    exposed = [a for a in listening if not a.startswith("127.") and not a.endswith(":22")]
    assert exposed == [], listening   # sshd only (loopback: Docker's own helpers)
    link_address = (STATE / "link-address").read_text().strip()
    front_ports = ssh("ss -ltnH").stdout
    assert f"{link_address}:6380" in front_ports and f"{link_address}:8444" in front_ports, front_ports
    assert "0.0.0.0:6380" not in front_ports and ":6379 " not in front_ports, front_ports
    # the link refuses a client without the link CA's certificate, even one that knows the way
    refused = on_worker("python3 - <<'EOF'\nimport ssl, urllib.request, urllib.error\ntry:\n"
                        f"    urllib.request.urlopen('https://{link_address}:8444/faster/', "
                        "context=ssl._create_unverified_context())\nexcept urllib.error.HTTPError as e:\n"
                        "    print(e.code)\nEOF", check=False)
    assert refused.stdout.strip() == "400", refused   # nginx: "No required SSL certificate was sent"
    # the jobs' audio route is not on the public vhost
    assert client.get(base_url(VHOST) + "/internal/jobs/" + "0" * 32 + "/audio").status_code == 404

    wait_registered(client)   # the worker host's workers start at the end of the deploy: connected now
    before = metrics(client)
    ids = [submit(client, audio["short"]) for _ in range(8)]
    bodies = [finished(client, job_id) for job_id in ids]
    assert all(b["status"] == "succeeded" for b in bodies), bodies
    hosts = {b["worker"] for b in bodies}
    assert hosts == {FRONT, WORKER}, hosts   # a job's status names the host that ran it
    text = client.get(base_url(VHOST) + bodies[0]["result_url"], params={"response_format": "text"}).text
    assert "budget" in text.lower()
    listed = client.get(base_url(VHOST) + "/v1/jobs", params={"limit": 8}).json()
    assert set(listed["workers"]) == {FRONT, WORKER}
    after = metrics(client)
    for host in (FRONT, WORKER):
        ran = sum(1 for b in bodies if b["worker"] == host)
        assert metric(after, "stt_jobs_finished_by_worker_total", worker=host, outcome="succeeded") \
            - metric(before, "stt_jobs_finished_by_worker_total", worker=host, outcome="succeeded") == ran
    assert metric(after, "stt_job_workers", worker=WORKER) >= 1
    # the worker host kept no copy of the audio
    assert on_worker("docker exec faster-whisper-worker-1 sh -c 'ls -A /tmp/stt/jobs'").stdout.strip() == ""


def test_a_worker_host_killed_mid_job_has_its_job_finished_elsewhere(worker_host, client, audio):
    before = metrics(client)
    front_worker("stop")   # so that the worker host takes the job
    try:
        job_id = submit(client, audio["long"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            body = status(client, job_id)
            if body["status"] == "running" and body["worker"] == WORKER and body["progress"]["seconds_total"]:
                break
            assert body["status"] in ("queued", "running"), body
            time.sleep(0.5)
        else:
            raise AssertionError(f"the worker host never took the job: {body}")
        subprocess.run(["docker", "kill", WORKER], check=True, capture_output=True)   # the host dies mid-job
    finally:
        front_worker("start")
    body = finished(client, job_id, timeout=600)
    assert body["status"] == "succeeded" and body["worker"] == FRONT and body["attempts"] == 2, body
    text = client.get(base_url(VHOST) + body["result_url"], params={"response_format": "text"}).text
    assert "agenda" in text.lower()
    after = metrics(client)
    # one outcome for the client: the job finished once, on the front
    assert metric(after, "stt_jobs_finished_total", outcome="succeeded") \
        - metric(before, "stt_jobs_finished_total", outcome="succeeded") == 1
    assert metric(after, "stt_jobs_finished_by_worker_total", worker=WORKER, outcome="succeeded") \
        == metric(before, "stt_jobs_finished_by_worker_total", worker=WORKER, outcome="succeeded")

    # the host comes back (a reboot): its workers rejoin by themselves, no deploy
    subprocess.run(["bash", "sandbox/worker-up.sh", WORKER, str(WORKER_PORT)], cwd=REPO, check=True,
                   capture_output=True)
    wait_registered(client)
    front_worker("stop")
    try:
        body = finished(client, submit(client, audio["short"]), timeout=300)
    finally:
        front_worker("start")
    assert body["status"] == "succeeded" and body["worker"] == WORKER, body


def test_one_deploy_removes_a_worker_host(worker_host, client, audio):
    deploy("")
    front_worker("stop")
    try:
        job_id = submit(client, audio["short"])
        time.sleep(25)   # the removed host's worker still runs, but Redis no longer lets it in
        body = status(client, job_id)
        assert body["status"] == "queued" and body["worker"] is None, body
    finally:
        front_worker("start")
    body = finished(client, job_id, timeout=300)
    assert body["status"] == "succeeded" and body["worker"] == FRONT, body
    # the front is the single host again: Redis on loopback and its socket, no link ports
    front_ports = ssh("ss -ltnH").stdout
    assert ":6380 " not in front_ports and ":8444 " not in front_ports and "127.0.0.1:6379" in front_ports
