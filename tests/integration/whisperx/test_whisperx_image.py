"""The images/whisperx Docker image builds on the test bed and serves: /health, the healthcheck, a non-root
user, a diarized transcription through the offline backend.

Built as the deploy builds it (stages/host/build_image.py) from the machine's wheelhouse: about 3 minutes
from scratch on the test bed (9 GB: PyPI's Linux torch is the CUDA build), seconds when only our code changed.
"""
import time

import pytest
import requests

from support.image_build import ROOT, built_image, docker, service_container, wait_health

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = f"whisperx-test:{ROOT.name.lower()}"   # one tag per checkout: worktrees build side by side


@pytest.fixture(scope="module")
def image():
    return built_image("whisperx", TAG)


def test_image_serves(image, tiny_model, conversation):
    with service_container(image, tiny_model, "tiny.en", prefix="whisperx-test") as (name, url):
        r = wait_health(url, name)
        assert r.json()["model"] == "tiny.en"
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        with open(conversation.wav_path, "rb") as f:
            r = requests.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=300,
                              data={"response_format": "diarized_json", "num_speakers": "2"})
        assert r.status_code == 200, r.text
        assert len({s["speaker"] for s in r.json()["segments"]}) == 2
        # Docker's own healthcheck (interval 15 s) turns healthy
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            health = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if health == "healthy":
                break
            time.sleep(2)
        assert health == "healthy"
