"""The image builds on the test bed's Docker (local stand-in base) and serves /health + a real transcription."""
import json
import time

import httpx
import pytest

from support.image_build import ROOT, built_image, docker, service_container, wait_health
from support.transcript_wer import wer

from .conftest import tiny_model

pytestmark = [pytest.mark.docker]
TAG = f"whisper-faster-test:{ROOT.name.lower()}"   # one tag per checkout: worktrees build side by side
BASE = "local/python:3.11-slim"


@pytest.fixture(scope="module")
def image():
    return built_image("faster", TAG, base=BASE)


@pytest.fixture(scope="module")
def container(image):
    with service_container(image, tiny_model(), "/models/tiny.en", prefix="faster-test") as (name, url):
        wait_health(url, name, timeout=120)
        yield name, url


def test_image_serves(container, speech):
    name, url = container
    assert httpx.get(url + "/health").json()["status"] == "ok"
    with open(speech["mp3"], "rb") as f:
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"}, timeout=120)
    assert r.status_code == 200, r.text
    assert wer(speech["text"], r.json()["text"]) <= 0.25


def test_image_contract(container, image):
    name, _ = container
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    cfg = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert "/cache/huggingface" in (cfg.get("Volumes") or {})
    assert any(e == "HF_HOME=/cache/huggingface" for e in cfg["Env"])
    assert cfg.get("Healthcheck", {}).get("Test")
    r = docker("exec", name, "python3", "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert r.stdout.strip() == "None"
    deadline = time.monotonic() + 60  # the HEALTHCHECK itself (python urllib, no curl) turns healthy
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"
