"""The GPU variant of the whisperx image (build arg DEVICE=cuda), tested short of the GPU itself: this machine has none.

PyPI's Linux torch is already the CUDA build, so the variant only checks that and registers the CUDA libraries of
torch's nvidia wheels (cuBLAS 12, cuDNN 9) for the ASR's CTranslate2. Here: the libraries are found, torch is a CUDA
build that sees 0 GPUs, device=cuda answers a clear error (API up, worker exits in one line), and the same image on
device=cpu transcribes with the tiny.en model. The CUDA path itself: bench/gpu_check.sh on a GPU host."""
import json
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
TAG = f"whisperx-test:{ROOT.name.lower()}-cuda"
LIBRARIES = ("libcublas.so.12", "libcudnn.so.9", "libcudnn_ops.so.9")


def _docker(*args, timeout=120, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker") or _docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine (make docker)")
    build_image("whisperx", TAG, build_args={"DEVICE": "cuda"})
    return TAG


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(image, tiny_model, device):
    port = _free_port()
    name = f"whisperx-gpu-test-{device}-{port}"
    _docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", f"{tiny_model}:/models/tiny.en:ro",
            "-e", "STT_MODEL=tiny.en", "-e", "HF_HUB_OFFLINE=1", "-e", "STT_CPU_THREADS=2",
            "-e", "STT_ALLOW_OPEN_ACCESS=1", "-e", f"STT_DEVICE={device}", image)
    return name, f"http://127.0.0.1:{port}"


def _health(url, name, want, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(url + "/health", timeout=3)
            if want(r):
                return r
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail("no expected /health answer: " + _docker("logs", name, check=False).stderr[-3000:])


def test_cuda_torch_and_libraries(image):
    listed = _docker("run", "--rm", "--entrypoint", "ldconfig", image, "-p").stdout
    for lib in LIBRARIES:
        assert f"{lib} " in listed, lib
    probe = ("import ctypes, json, torch, ctranslate2\n"
             f"for name in {list(LIBRARIES)!r}: ctypes.CDLL(name)\n"
             "print(json.dumps({'cuda': torch.version.cuda, 'torch_devices': torch.cuda.device_count(),"
             " 'ct2_devices': ctranslate2.get_cuda_device_count()}))")
    out = json.loads(_docker("run", "--rm", image, "python", "-c", probe).stdout)
    assert out["cuda"] and out["cuda"].startswith("12.")   # a CUDA 12 torch build
    assert out["torch_devices"] == 0 and out["ct2_devices"] == 0   # no GPU on this machine


def test_cuda_without_gpu_answers_a_clear_error(image, tiny_model, speech_wav):
    name, url = _run(image, tiny_model, "cuda")
    try:
        h = _health(url, name, lambda r: r.status_code == 503 and r.json().get("status") == "error")
        assert "STT_DEVICE=cuda but no GPU is visible" in h.json()["error"]
        for path, data in (("/transcribe", {"diarize": "true"}), ("/v1/audio/transcriptions", {})):
            with open(speech_wav, "rb") as f:
                r = requests.post(url + path, files={"file": f}, data=data, timeout=60)
            assert r.status_code == 503 and r.json()["error"]["code"] == "device_unavailable", r.text
        state = json.loads(_docker("inspect", name).stdout)[0]
        assert state["State"]["Running"] and state["RestartCount"] == 0
        logs = _docker("logs", name).stderr
        assert "Traceback" not in logs and logs.count("no GPU is visible") == 1
    finally:
        _docker("rm", "-f", name, check=False)


def test_cuda_worker_exits_in_one_line(image):
    r = _docker("run", "--rm", "-e", "STT_DEVICE=cuda", "-e", "STT_REDIS_URL=redis://127.0.0.1:1/0", image,
                "python", "-m", "whisperx_server.worker", check=False)
    assert r.returncode == 1
    assert "no GPU is visible" in r.stderr and "Traceback" not in r.stderr


def test_same_image_on_cpu_transcribes(image, tiny_model, speech_wav, speech_text):
    from transcript_wer import wer

    name, url = _run(image, tiny_model, "cpu")
    try:
        h = _health(url, name, lambda r: r.status_code == 200)
        assert h.json()["device"] == "cpu" and h.json()["compute_type"] == "int8"
        with open(speech_wav, "rb") as f:
            r = requests.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=300)
        assert r.status_code == 200, r.text
        assert wer(speech_text, r.json()["text"]) <= 0.25
    finally:
        _docker("rm", "-f", name, check=False)
