"""Issue 13 on the sandbox host: Redis provisioned by the deploy, a job through nginx and the autostart proxy
to the service's RQ worker, its result in every format; Redis reachable from the host only, with a password."""

from __future__ import annotations

import subprocess
import time

import pytest
from transcript_wer import wer

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
