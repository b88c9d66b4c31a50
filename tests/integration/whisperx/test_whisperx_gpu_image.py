"""The GPU variant of the whisperx image (build arg DEVICE=cuda), tested short of the GPU itself: this machine has none.

PyPI's Linux torch is already the CUDA build, so the variant only checks that and registers the CUDA libraries of
torch's nvidia wheels (cuBLAS 12, cuDNN 9) for the ASR's CTranslate2. Here: the libraries are found, torch is a CUDA
build that sees 0 GPUs, device=cuda answers a clear error (API up, worker exits in one line), and the same image on
device=cpu transcribes with the tiny.en model. The CUDA path itself: bench/gpu_check.sh on a GPU host."""
import json

import pytest
import requests

from support.image_build import ROOT, built_image, cuda_probe, docker, service_container, wait_health

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = f"whisperx-test:{ROOT.name.lower()}-cuda"
LIBRARIES = ("libcublas.so.12", "libcudnn.so.9", "libcudnn_ops.so.9")


@pytest.fixture(scope="module")
def image():
    return built_image("whisperx", TAG, build_args={"DEVICE": "cuda"})


def _run(image, tiny_model, device):
    return service_container(image, tiny_model, "tiny.en", device, prefix="whisperx-gpu-test")


def test_cuda_torch_and_libraries(image):
    out = cuda_probe(image, LIBRARIES, "import torch, ctranslate2\n"
                     "print(json.dumps({'cuda': torch.version.cuda, 'torch_devices': torch.cuda.device_count(),"
                     " 'ct2_devices': ctranslate2.get_cuda_device_count()}))")
    assert out["cuda"] and out["cuda"].startswith("12.")   # a CUDA 12 torch build
    assert out["torch_devices"] == 0 and out["ct2_devices"] == 0   # no GPU on this machine


def test_cuda_without_gpu_answers_a_clear_error(image, tiny_model, speech_wav):
    with _run(image, tiny_model, "cuda") as (name, url):
        h = wait_health(url, name, lambda r: r.status_code == 503 and r.json().get("status") == "error")
        assert "STT_DEVICE=cuda but no GPU is visible" in h.json()["error"]
        for path, data in (("/transcribe", {"diarize": "true"}), ("/v1/audio/transcriptions", {})):
            with open(speech_wav, "rb") as f:
                r = requests.post(url + path, files={"file": f}, data=data, timeout=60)
            assert r.status_code == 503 and r.json()["error"]["code"] == "device_unavailable", r.text
        state = json.loads(docker("inspect", name).stdout)[0]
        assert state["State"]["Running"] and state["RestartCount"] == 0
        logs = docker("logs", name).stderr
        assert "Traceback" not in logs and logs.count("no GPU is visible") == 1


def test_cuda_worker_exits_in_one_line(image):
    r = docker("run", "--rm", "-e", "STT_DEVICE=cuda", "-e", "STT_REDIS_URL=redis://127.0.0.1:1/0", image,
                "python", "-m", "whisperx_server.worker", check=False)
    assert r.returncode == 1
    assert "no GPU is visible" in r.stderr and "Traceback" not in r.stderr


def test_same_image_on_cpu_transcribes(image, tiny_model, speech_wav, speech_text):
    from support.transcript_wer import wer

    with _run(image, tiny_model, "cpu") as (name, url):
        h = wait_health(url, name, lambda r: r.status_code == 200)
        assert h.json()["device"] == "cpu" and h.json()["compute_type"] == "int8"
        with open(speech_wav, "rb") as f:
            r = requests.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=300)
        assert r.status_code == 200, r.text
        assert wer(speech_text, r.json()["text"]) <= 0.25
