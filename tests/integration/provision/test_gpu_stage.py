"""The GPU stage planned by the real pyinfra against this machine (`pyinfra @local --dry --diff`: real facts, nothing
changed), and a cuda service's compose file checked by the real Compose (`config`).

This machine has no GPU, no NVIDIA driver and cannot reach NVIDIA's packages, so the stage is only planned here;
installing the toolkit and running on the GPU is bench/gpu_check.sh's work on a GPU host."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PYINFRA = Path(sys.executable).with_name("pyinfra")
CUDA = '{"faster": {"device": "cuda", "build_args": {"DEVICE": "cuda"}}}'
DEPLOY = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pyinfra import host
from stages import gpu
from stages.settings import Platform
gpu.nvidia_runtime(Platform.from_group_data(host.data))
"""


@pytest.fixture
def plan(tmp_path):
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DEPLOY)

    def run(*data: str):
        args = [str(PYINFRA), "@local", str(deploy), "--dry", "--diff"]
        for d in data:
            args += ["--data", d]
        # the repository's group_data/ (all.py) is read from the working directory, as in a real deploy
        return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    return run


def _has_toolkit() -> bool:
    from stages.gpu import HAS_TOOLKIT
    return subprocess.run(["sh", "-c", HAS_TOOLKIT]).returncode == 0


def test_cpu_services_plan_nothing(plan):
    r = plan()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "Detected changes" in out and "GPU: NVIDIA" not in out and "nvidia" not in out.lower()


def test_cuda_service_on_a_cpu_image_stops_first(plan):
    r = plan('service_overrides={"whisperx": {"device": "cuda"}}')
    assert r.returncode != 0
    assert "'whisperx' has device 'cuda' but builds the CPU image" in r.stdout + r.stderr


@pytest.mark.skipif(_has_toolkit(), reason="this machine has the NVIDIA toolkit or an apt source for it")
def test_cuda_without_repository_says_what_to_set(plan):
    r = plan(f"service_overrides={CUDA}")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "no NVIDIA container toolkit and no apt source" in out and "nvidia_apt_repo" in out
    assert "Will create" not in out   # stopped before planning any change


def test_cuda_repository_without_key_refused(plan, tmp_path):
    r = plan(f"service_overrides={CUDA}", "nvidia_apt_repo=https://packages.example/deb/amd64",
             f"nvidia_apt_key={tmp_path}/absent.asc")
    assert r.returncode != 0 and "nvidia_apt_key" in r.stdout + r.stderr


@pytest.mark.skipif(_has_toolkit(), reason="this machine has the NVIDIA toolkit or an apt source for it")
def test_cuda_with_repository_plans_the_runtime(plan, tmp_path):
    key = tmp_path / "nvidia.asc"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n(the operator's checked copy)\n")
    r = plan(f"service_overrides={CUDA}", "nvidia_apt_repo=https://packages.example/deb/amd64",
             f"nvidia_apt_key={key}")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert "deb [signed-by=/usr/share/keyrings/whisper-platform-nvidia-container-toolkit.asc] " \
           "https://packages.example/deb/amd64 /" in out
    for step in ("repository signing key", "apt source", "apt: read the NVIDIA container toolkit source",
                 "Install nvidia-container-toolkit", "Docker: add the nvidia runtime"):
        assert step in out, out[-3000:]
    assert "no NVIDIA driver found" in out   # this machine has none: said, not fatal


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("key", ["faster", "whisperx"])
def test_compose_accepts_the_gpu_reservation(tmp_path, key):
    compose = _compose()
    if not compose:
        pytest.skip("no Docker Compose (apt-get install docker-compose)")
    path = _render(tmp_path, key, {key: {"device": "cuda", "build_args": {"DEVICE": "cuda"}}})
    r = subprocess.run([*compose, "-f", str(path), "config"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert len(services) == 2   # the API and its job worker, both on the GPU
    for svc in services.values():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
        assert svc["environment"]["STT_DEVICE"] == "cuda" and svc["environment"]["STT_COMPUTE_TYPE"] == "float16"
    cpu = _render(tmp_path, key, {})
    r = subprocess.run([*compose, "-f", str(cpu), "config"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for svc in yaml.safe_load(r.stdout)["services"].values():
        assert "deploy" not in svc and svc["environment"]["STT_COMPUTE_TYPE"] == "int8"


def _render(tmp_path, key: str, overrides: dict) -> Path:
    import dataclasses

    import jinja2

    from stages.compose_projects import compose_values
    from stages.settings import Platform, read_group_data

    p = Platform.from_group_data(read_group_data(service_overrides=overrides))
    # the deploy's own values, with this test's folders for every host path compose checks
    p = dataclasses.replace(p, hf_cache_dir=str(tmp_path / "hf"), models_dir=str(tmp_path / "models"),
                            jobs_env_file=str(tmp_path / "jobs.env"), jobs_dir=str(tmp_path / "jobs"))
    svc = p.service(key)
    (tmp_path / ".env").write_text("STT_API_KEYS=x\n")
    (tmp_path / "jobs.env").write_text("REDIS_PASSWORD=x\n")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.from_string((REPO / "templates/compose/service.yml.j2").read_text()).render(
        **compose_values(svc, p, f"{svc.image_name}:src-0", worker_name="front"))
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    return path
