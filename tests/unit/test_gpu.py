"""GPU hosts without a GPU: the deploy's cuda checks, the compose file's GPU reservation, and the images' refusal
of device=cuda where no GPU is visible (ctranslate2's real device count: 0 on this machine, which has no GPU).
What needs the GPU itself is in bench/gpu_check.sh."""

from __future__ import annotations

import subprocess
import sys

import jinja2
import pytest
import yaml

from stages import gpu
from stages.compose_projects import compose_values
from stages.settings import REPO, Platform, read_group_data


def _data(**over) -> Platform:
    return Platform.from_group_data(read_group_data(**over))


CUDA = {"faster": {"device": "cuda", "build_args": {"DEVICE": "cuda"}}}


def render(p: Platform, key="faster") -> str:
    svc = p.service(key)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((REPO / "templates/compose/service.yml.j2").read_text()).render(
        **compose_values(svc, p, "whisper-faster:src-0"))


def test_no_cuda_service_no_gpu_stage():
    assert gpu.cuda_services(_data()) == []
    assert [s.key for s in gpu.cuda_services(_data(service_overrides=CUDA))] == ["faster"]


def test_cuda_service_needs_the_gpu_image():
    svcs = gpu.cuda_services(_data(service_overrides={"whisperx": {"device": "cuda"}}))
    with pytest.raises(gpu.GPUSetupError, match=r"'whisperx'.*build_args.*DEVICE.*cuda"):
        gpu.check_images(svcs)
    gpu.check_images(gpu.cuda_services(_data(service_overrides=CUDA)))


def test_apt_source_line():
    assert gpu.source_line("https://packages.example/deb/amd64") == \
        f"deb [signed-by={gpu.KEYRING}] https://packages.example/deb/amd64 /\n"
    assert gpu.source_line(" https://m.example/ubuntu jammy main ").endswith("https://m.example/ubuntu jammy main\n")
    msg = gpu.missing_source_message("gpu1")
    assert "nvidia_apt_repo" in msg and "nvidia_apt_key" in msg and "gpu1" in msg


def test_compose_cpu_service_unchanged_int8_no_gpu():
    doc = yaml.safe_load(render(_data()))
    svc = doc["services"]["faster-whisper"]
    assert svc["environment"]["STT_COMPUTE_TYPE"] == "int8" and svc["environment"]["STT_DEVICE"] == "cpu"
    assert "deploy" not in svc and "deploy" not in doc["services"]["faster-whisper-worker"]


def test_compose_cuda_service_reserves_gpus_float16():
    doc = yaml.safe_load(render(_data(service_overrides=CUDA)))
    for name in ("faster-whisper", "faster-whisper-worker"):   # the API and its job worker both
        svc = doc["services"][name]
        assert svc["environment"]["STT_COMPUTE_TYPE"] == "float16"
        assert svc["deploy"]["resources"]["reservations"]["devices"] == \
            [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    chosen = {"faster": {**CUDA["faster"], "compute_type": "int8_float16", "gpu_count": 1}}
    svc = yaml.safe_load(render(_data(service_overrides=chosen)))["services"]["faster-whisper"]
    assert svc["environment"]["STT_COMPUTE_TYPE"] == "int8_float16"
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1


def test_whisperx_compute_type_defaults():
    env = yaml.safe_load(render(_data(), "whisperx"))["services"]["whisperx"]["environment"]
    assert env["STT_COMPUTE_TYPE"] == "int8"
    data = _data(service_overrides={"whisperx": {"device": "cuda", "build_args": {"DEVICE": "cuda"}}})
    assert yaml.safe_load(render(data, "whisperx"))["services"]["whisperx"]["environment"]["STT_COMPUTE_TYPE"] == \
        "float16"


# --- the images' settings: device=cuda where no GPU is visible ---------------------------------------------

def test_device_problem_only_for_cuda():
    from stt_common import STTSettings

    def boom():
        raise AssertionError("not probed on cpu")

    assert STTSettings(device="cpu").device_problem(boom) is None
    assert STTSettings(device="auto").device_problem(boom) is None   # auto falls back to the CPU by itself
    assert STTSettings(device="cuda").device_problem(lambda: 1) is None
    msg = STTSettings(device="cuda").device_problem(lambda: 0)
    assert "no GPU is visible" in msg and "STT_DEVICE=cpu" in msg and "--gpus" in msg

    def no_libs():
        raise RuntimeError("libcublas.so.12 is missing: this is the CPU variant of the image")
    assert "libcublas.so.12 is missing" in STTSettings(device="cuda").device_problem(no_libs)
    assert STTSettings(device="cpu").effective_compute_type == "int8"
    assert STTSettings(device="cuda").effective_compute_type == "float16"


def test_faster_probe_sees_no_gpu_here():
    from faster_server.engine import cuda_devices
    assert cuda_devices() == 0   # ctranslate2.get_cuda_device_count() on a machine without a GPU


def test_faster_api_answers_device_unavailable(monkeypatch):
    from fastapi.testclient import TestClient

    from faster_server.app import build_app
    from faster_server.settings import FasterSettings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = FasterSettings(device="cuda", allow_open_access=True, model="/nonexistent/never-loaded")
    with TestClient(build_app(settings)) as c:
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "error"
        assert "no GPU is visible" in h.json()["error"]
        r = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")},
                   data={"model": "whisper-1"})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "device_unavailable" and "no GPU is visible" in err["message"]


def test_faster_worker_refuses_in_one_line():
    env = {"STT_DEVICE": "cuda", "STT_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": f"{REPO}/images/common:{REPO}/images/faster"}
    r = subprocess.run([sys.executable, "-m", "faster_server.worker"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "no GPU is visible" in r.stderr and "Traceback" not in r.stderr
