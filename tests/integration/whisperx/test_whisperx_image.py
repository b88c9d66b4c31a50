"""The images/whisperx Docker image builds on the test bed and serves: /health, the healthcheck, a non-root
user, a diarized transcription through the offline backend.

The image is big (torch 2.8 from PyPI is the CUDA build: about 9 GB, about 8 minutes to build from
scratch on the test bed), so it is built once and reused under the tag ``whisperx-test:dev``:
- the tag exists: ``docker build`` runs again and only the code layers are rebuilt (seconds, from the cache);
- it does not: the test builds it only when WHISPERX_BUILD_IMAGE=1, and otherwise skips saying so.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TAG = os.environ.get("WHISPERX_IMAGE", "whisperx-test:dev")
BASE = os.environ.get("WHISPERX_BASE_IMAGE", "local/python:3.11-slim")
# only PyPI is reachable on the test bed; real CPU hosts keep the Dockerfile's CPU wheel index
TORCH_INDEX = os.environ.get("WHISPERX_TORCH_INDEX_URL", "https://pypi.org/simple")


def _docker(*args, timeout=60, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker"):
        pytest.skip("docker is not installed")
    if _docker("info", check=False).returncode != 0:
        pytest.skip("the Docker engine is not running (make docker)")
    exists = _docker("image", "inspect", TAG, check=False).returncode == 0
    if not exists and not os.environ.get("WHISPERX_BUILD_IMAGE"):
        pytest.skip(f"image {TAG} is absent and WHISPERX_BUILD_IMAGE is not set: building it takes about 8 "
                    f"minutes and 9 GB on the test bed; make test still builds and calls it: the e2e tier builds this "
                    f"Dockerfile inside the sandbox host and transcribes through it")
    if _docker("image", "inspect", BASE, check=False).returncode != 0:
        subprocess.run(["bash", str(ROOT / "sandbox/base-images.sh")], check=True, timeout=900)
    ca = ROOT / "images/build-ca/extra-ca.pem"
    system_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if system_ca.is_file() and (not ca.exists() or ca.read_bytes() != system_ca.read_bytes()):
        shutil.copyfile(system_ca, ca)
    t0 = time.monotonic()
    r = subprocess.run(["docker", "build", "-f", "images/whisperx/Dockerfile", "--build-arg", f"BASE_IMAGE={BASE}",
                        "--build-arg", f"TORCH_INDEX_URL={TORCH_INDEX}", "-t", TAG, "images/"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"docker build {TAG}: {time.monotonic() - t0:.0f}s ({'cached' if exists else 'from scratch'})")
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
