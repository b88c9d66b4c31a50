"""Asynchronous jobs on the sandbox host: Redis provisioned by the deploy, a job through nginx and the autostart proxy
to the service's RQ worker, its result in every format; Redis reachable from the host only, with a password."""

from __future__ import annotations

import subprocess
import time

import pytest
from support.transcript_wer import wer

from sandbox.client import base_url, http_client

from .conftest import AGENDA, speech, ssh

pytestmark = pytest.mark.sandbox
# A meeting as users send it (conftest.AGENDA), read twice in two voices (about two minutes, so the worker takes
# the long-audio path). The same sentence said over and over with no pause is no meeting, and tiny.en conditioned on
# its own previous text loses whole repeats of it on some CPUs.
VOICES = ("en-us", "en-gb")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jobs")
    wav = folder / "recording.wav"
    voices = [speech(folder, voice, AGENDA, voice=voice, pause=1.5) for voice in VOICES]
    subprocess.run(["sox", *voices, str(wav)], check=True)
    out = folder / "recording.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(out)], check=True)
    return out


def test_job_through_nginx_end_to_end(deployed, recording):
    key = deployed["secrets"]["WHISPER_API_KEY"].split(",")[0]
    with http_client("whisper.sandbox.test") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        base = base_url("whisper.sandbox.test")
        with open(recording, "rb") as f:
            r = client.post(base + "/v1/jobs", files={"file": f}, data={"language": "en", "response_format": "srt"})
        assert r.status_code == 202, r.text
        job = r.json()
        deadline = time.monotonic() + 600
        states = []
        while time.monotonic() < deadline:
            status = client.get(base + job["status_url"]).json()
            states.append(status["status"])
            if status["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(1)
        assert status["status"] == "succeeded", (status, ssh("docker logs --tail 50 faster-whisper-worker 2>&1",
                                                             check=False).stdout)
        assert status["worker"] and status["progress"]["fraction"] == 1.0
        srt = client.get(base + status["result_url"])   # the job's own response_format
        assert srt.status_code == 200 and "-->" in srt.text
        text = client.get(base + status["result_url"], params={"response_format": "text"}).text
        assert wer(" ".join(AGENDA * len(VOICES)), text) <= 0.25, text
        listed = client.get(base + "/v1/jobs").json()["data"]
        assert job["id"] in [j["id"] for j in listed]
        # without credentials nginx refuses, as for every other route
        assert client.get(base + job["status_url"], headers={"Authorization": ""}).status_code == 401


def test_redis_is_local_and_needs_its_password(deployed):
    assert ssh("systemctl is-active redis-server").stdout.strip() == "active"
    listening = ssh("ss -ltnH '( sport = :6379 )'").stdout.split()
    assert listening and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in listening if ":6379" in a), listening
    socket = "/run/whisper-platform/redis/redis.sock"   # a folder of ours, not Redis's RuntimeDirectory
    assert "NOAUTH" in ssh(f"redis-cli -s {socket} ping 2>&1", check=False).stdout
    # only root, Redis and the services' group reach it; systemd-tmpfiles makes the folder at boot
    assert ssh(f"stat -c '%a %U %G' {socket} $(dirname {socket})").stdout.split() == \
        ["770", "redis", "whisper-app", "2750", "redis", "whisper-app"]
    assert ssh("systemd-tmpfiles --cat-config 2>/dev/null | grep -c whisper-platform/redis").stdout.strip() != "0"
    assert ssh("stat -c '%a %U' /etc/whisper-platform/jobs.env").stdout.split() == ["600", "root"]
    assert ssh("stat -c '%a %U %G' /etc/redis/whisper-platform-auth.conf").stdout.split() == ["640", "root", "redis"]
    assert ssh("grep -c appendonly /etc/redis/whisper-platform.conf").stdout.strip() == "1"


def test_two_basic_auth_users_each_see_only_their_own_jobs(deployed, tmp_path):
    """Before: nginx forwarded API key #1 for every basic-auth user, so all of them (the shared htpasswd's other
    users too) shared one job namespace. Now each one is a caller of its own; the API key's caller is another."""
    import bcrypt

    secrets = deployed["secrets"]
    me = (secrets["WHISPER_BASIC_AUTH_USER"], secrets["WHISPER_BASIC_AUTH_PASSWORD"])
    other = ("colleague-e2e", "colleague-password")
    line = f"{other[0]}:{bcrypt.hashpw(other[1].encode(), bcrypt.gensalt(5)).decode()}"
    ssh(f"echo '{line}' >> /etc/nginx/.htpasswd")   # another user of the host's shared htpasswd
    wav = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "hello"], check=True)
    base = base_url("whisper.sandbox.test")
    try:
        with http_client("whisper.sandbox.test") as client:
            def submit(auth):
                with open(wav, "rb") as f:
                    r = client.post(base + "/v1/jobs", files={"file": f}, auth=auth)
                assert r.status_code == 202, r.text
                return r.json()["id"]

            def listed(**kw):
                r = client.get(base + "/v1/jobs", **kw)
                assert r.status_code == 200, r.text
                return {j["id"] for j in r.json()["data"]}

            mine, theirs = submit(me), submit(other)
            key = {"headers": {"Authorization": f"Bearer {secrets['WHISPER_API_KEY'].split(',')[0]}"}}
            assert mine in listed(auth=me) and theirs not in listed(auth=me)
            assert theirs in listed(auth=other) and mine not in listed(auth=other)
            assert not {mine, theirs} & listed(**key)
            assert client.get(f"{base}/v1/jobs/{mine}", auth=other).status_code == 404
            assert client.delete(f"{base}/v1/jobs/{mine}", auth=other).status_code == 404
            # a header a client sends to pick a user is overwritten by nginx
            assert mine not in listed(auth=other, headers={"X-STT-User": me[0]})
            assert client.get(f"{base}/v1/jobs/{mine}", auth=me).status_code == 200
    finally:
        ssh(f"sed -i '/^{other[0]}:/d' /etc/nginx/.htpasswd")


def test_expired_job_files_are_swept_by_a_host_timer(deployed):
    """The sweep runs from a systemd timer in a one-off container of each worker (services stopped or not)."""
    assert ssh("systemctl is-enabled whisper-jobs-sweep.timer").stdout.strip() == "enabled"
    assert ssh("systemctl is-active whisper-jobs-sweep.timer").stdout.strip() == "active"
    old = "/var/lib/whisper-platform/jobs/faster/0123456789abcdef0123456789abcdef"
    ssh(f"mkdir -p {old} && echo x > {old}/audio && chown -R --reference=/var/lib/whisper-platform/jobs/faster {old} "
        f"&& touch -d '5 days ago' {old}")
    run = ssh("systemctl start whisper-jobs-sweep.service; journalctl -u whisper-jobs-sweep.service -n 40 --no-pager",
              check=False)
    assert "expired job folder(s) removed" in run.stdout, run.stdout + run.stderr
    assert ssh(f"test -e {old}", check=False).returncode != 0
