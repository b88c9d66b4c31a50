"""The image builds on the test bed's Docker (local stand-in base) and serves /health + a real transcription."""
import json
import shutil
import subprocess
import time

import httpx
import pytest

from image_build import ROOT, build_image
from transcript_wer import wer

from .conftest import free_port, tiny_model

pytestmark = [pytest.mark.docker]
TAG = f"whisper-faster-test:{ROOT.name.lower()}"   # one tag per checkout: worktrees build side by side
BASE = "local/python:3.11-slim"


def sh(*args, check=True, timeout=900):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker") or sh("docker", "info", check=False).returncode != 0:
        pytest.skip("no Docker engine (make docker)")
    build_image("faster", TAG, BASE)
    return TAG


@pytest.fixture(scope="module")
def container(image):
    port = free_port()
    name = f"faster-test-{port}"
    sh("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
       "-v", f"{tiny_model()}:/models/tiny.en:ro", "-e", "STT_MODEL=/models/tiny.en", "-e", "STT_CPU_THREADS=2", "-e", "STT_ALLOW_OPEN_ACCESS=1",
       image)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("container never became healthy: " + sh("docker", "logs", name, check=False).stderr[-3000:])
        yield name, url
    finally:
        sh("docker", "rm", "-f", name, check=False)


def test_image_serves(container, speech):
    name, url = container
    assert httpx.get(url + "/health").json()["status"] == "ok"
    with open(speech["mp3"], "rb") as f:
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"}, timeout=120)
    assert r.status_code == 200, r.text
    assert wer(speech["text"], r.json()["text"]) <= 0.25


def test_image_contract(container, image):
    name, _ = container
    assert sh("docker", "exec", name, "id", "-u").stdout.strip() == "10001"
    cfg = json.loads(sh("docker", "image", "inspect", image).stdout)[0]["Config"]
    assert "/cache/huggingface" in (cfg.get("Volumes") or {})
    assert any(e == "HF_HOME=/cache/huggingface" for e in cfg["Env"])
    assert cfg.get("Healthcheck", {}).get("Test")
    r = sh("docker", "exec", name, "python3", "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert r.stdout.strip() == "None"
    deadline = time.monotonic() + 60  # the HEALTHCHECK itself (python urllib, no curl) turns healthy
    status = ""
    while time.monotonic() < deadline:
        status = sh("docker", "inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"
