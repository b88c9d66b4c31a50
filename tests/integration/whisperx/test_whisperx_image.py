"""The images/whisperx Docker image builds on the test bed and serves: /health, the healthcheck, a non-root
user, a diarized transcription through the offline backend.

Built as the deploy builds it (stages/host/build_image.py) from the machine's wheelhouse: about 3 minutes
from scratch on the test bed (9 GB: PyPI's Linux torch is the CUDA build), seconds when only our code changed.
"""
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from image_build import build_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TAG = f"whisperx-test:{ROOT.name.lower()}"   # one tag per checkout: worktrees build side by side


def _docker(*args, timeout=60, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker"):
        pytest.skip("docker is not installed (make docker)")
    if _docker("info", check=False).returncode != 0:
        pytest.skip("the Docker engine is not running (make docker)")
    build_image("whisperx", TAG)
    return TAG


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_serves(image, tiny_model, conversation):
    port = _free_port()
    name = f"whisperx-test-{port}"
    _docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", f"{tiny_model}:/models/tiny.en:ro",
            "-e", "STT_MODEL=tiny.en", "-e", "HF_HUB_OFFLINE=1", "-e", "STT_CPU_THREADS=2",
            "-e", "STT_ALLOW_OPEN_ACCESS=1", image)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline:
            try:
                r = requests.get(url + "/health", timeout=3)
                status = r.status_code
                if status == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert status == 200, _docker("logs", name, check=False).stdout[-3000:]
        assert r.json()["model"] == "tiny.en"
        assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"
        with open(conversation.wav_path, "rb") as f:
            r = requests.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=300,
                              data={"response_format": "diarized_json", "num_speakers": "2"})
        assert r.status_code == 200, r.text
        assert len({s["speaker"] for s in r.json()["segments"]}) == 2
        # Docker's own healthcheck (interval 15 s) turns healthy
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            health = _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if health == "healthy":
                break
            time.sleep(2)
        assert health == "healthy"
    finally:
        _docker("rm", "-f", name, check=False)
