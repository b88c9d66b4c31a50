"""The GPU variant of the faster image (build arg DEVICE=cuda), tested short of the GPU itself: this machine has none.

It builds from the wheelhouse, CTranslate2 finds the CUDA 12 cuBLAS and cuDNN 9 libraries, sees 0 GPUs here, and the
service answers a clear error on device=cuda (the API stays up, the job worker exits in one line) while the same image
on device=cpu still transcribes with the tiny.en model. The CUDA path itself: bench/gpu_check.sh on a GPU host."""
import json
import time

import httpx
import pytest

from support.image_build import ROOT, built_image, cuda_probe, docker, service_container, wait_health
from support.transcript_wer import wer

from .conftest import tiny_model

pytestmark = [pytest.mark.docker]
TAG = f"whisper-faster-test:{ROOT.name.lower()}-cuda"
LIBRARIES = ("libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9")


@pytest.fixture(scope="module")
def image():
    return built_image("faster", TAG, build_args={"DEVICE": "cuda"})


def run_container(image, device):
    return service_container(image, tiny_model(), "/models/tiny.en", device, prefix="faster-gpu-test")


def test_cuda_libraries_found(image):
    out = cuda_probe(image, LIBRARIES, "import ctranslate2\n"
                     "print(json.dumps({'cuda_devices': ctranslate2.get_cuda_device_count(), 'loaded': libs,"
                     " 'version': ctranslate2.__version__}))")
    assert out["cuda_devices"] == 0 and out["loaded"] == list(LIBRARIES)   # no GPU on this machine


def test_cuda_without_gpu_answers_a_clear_error(image, speech):
    with run_container(image, "cuda") as (name, url):
        h = wait_health(url, name, lambda r: r.status_code == 503 and r.json().get("status") == "error")
        assert "STT_DEVICE=cuda but no GPU is visible" in h.json()["error"]
        with open(speech["wav"], "rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"},
                           timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "device_unavailable", r.text
        assert "--gpus" in r.json()["error"]["message"]
        time.sleep(2)
        state = json.loads(docker("inspect", name).stdout)[0]
        assert state["State"]["Running"] and state["RestartCount"] == 0   # up and answering, not a crash loop
        logs = docker("logs", name).stderr
        assert "Traceback" not in logs and logs.count("no GPU is visible") == 1   # said once, never retried


def test_cuda_worker_exits_in_one_line(image):
    r = docker("run", "--rm", "-e", "STT_DEVICE=cuda", "-e", "STT_REDIS_URL=redis://127.0.0.1:1/0", image,
           "python3", "-m", "faster_server.worker", check=False, timeout=120)
    assert r.returncode == 1
    assert "no GPU is visible" in r.stderr and "Traceback" not in r.stderr


def test_same_image_on_cpu_transcribes(image, speech):
    with run_container(image, "cpu") as (name, url):
        wait_health(url, name, lambda r: r.status_code == 200)
        with open(speech["mp3"], "rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"},
                           timeout=120)
        assert r.status_code == 200, r.text
        assert wer(speech["text"], r.json()["text"]) <= 0.25
