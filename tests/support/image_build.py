"""Build a service image on the test bed's Docker the way the deploy builds it on a host: through
stages/host/build_image.py, with pip fed by the machine's wheelhouse (sandbox/wheelhouse.sh), on the
local stand-in base image, with the machine's CA bundle for pip."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = "local/python:3.11-slim"


def build_image(image_dir: str, tag: str, base: str = BASE, timeout: int = 3600,
                build_args: dict[str, str] | None = None) -> str:
    """Build images/<image_dir>/Dockerfile as `tag` (with extra build arguments, e.g. DEVICE=cuda); returns the
    progress lines. Raises on failure."""
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode != 0:
        subprocess.run(["bash", str(ROOT / "sandbox/base-images.sh")], check=True, timeout=900)
    ca = ROOT / "images/build-ca/extra-ca.pem"
    system_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if system_ca.is_file() and (not ca.exists() or ca.read_bytes() != system_ca.read_bytes()):
        shutil.copyfile(system_ca, ca)  # this network re-signs TLS: pip in the build needs its CA
    wheelhouse = subprocess.run(["bash", str(ROOT / "sandbox/wheelhouse.sh")], capture_output=True, text=True,
                                check=True, timeout=3600).stdout.strip().splitlines()[-1]
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages/host/build_image.py"), "--tag", tag,
         "--file", str(ROOT / "images" / image_dir / "Dockerfile"), "--build-arg", f"BASE_IMAGE={base}",
         *[a for k, v in (build_args or {}).items() for a in ("--build-arg", f"{k}={v}")],
         # the default port, as the deploy uses: the wheelhouse URL is a build argument, so another port
         # would miss the layer cache of earlier builds
         "--wheelhouse", wheelhouse,
         "--log", str(ROOT / ".sandbox" / f"build-{image_dir}{''.join('-' + v for v in (build_args or {}).values())}.log"), str(ROOT / "images")],
        capture_output=True, text=True, timeout=timeout,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    print(f"built {tag} in {time.monotonic() - started:.0f} s")
    return r.stdout


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def cuda_probe(image: str, libraries, python_code: str) -> dict:
    """The CUDA image's libraries are known to its dynamic linker (ldconfig) and load (ctypes), then
    ``python_code`` (which prints one JSON object, ``libs`` in scope) runs in the image: its output."""
    listed = docker("run", "--rm", "--entrypoint", "ldconfig", image, "-p").stdout
    for lib in libraries:
        assert f"{lib} " in listed, lib
    probe = (f"import ctypes, json\nlibs = {list(libraries)!r}\nfor name in libs: ctypes.CDLL(name)\n"
             + python_code)
    return json.loads(docker("run", "--rm", image, "python3", "-c", probe).stdout)


def built_image(image_dir: str, tag: str, **kw) -> str:
    """The image, built as the deploy builds it; the test is skipped (saying why) without a Docker engine."""
    import pytest

    if not shutil.which("docker") or docker("info", check=False).returncode != 0:
        pytest.skip("no Docker engine running (make docker)")
    build_image(image_dir, tag, **kw)
    return tag


def wait_health(url: str, name: str, want=lambda r: r.status_code == 200, timeout: float = 180):
    """The first /health answer `want` accepts; fails with the container's log when none comes in time."""
    import pytest
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(url + "/health", timeout=3)
            if want(r):
                return r
        except requests.RequestException:
            pass
        time.sleep(0.5)
    logs = docker("logs", name, check=False)
    pytest.fail("no expected /health answer: " + (logs.stdout + logs.stderr)[-3000:])


@contextmanager
def service_container(image: str, model_dir: str, model: str, device: str = "cpu", prefix: str = "stt-test"):
    """One service container on a free loopback port, the tiny.en model mounted at /models/tiny.en, open
    access; yields (name, url) and removes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"{prefix}-{device}-{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", f"{model_dir}:/models/tiny.en:ro",
           "-e", f"STT_MODEL={model}", "-e", "HF_HUB_OFFLINE=1", "-e", "STT_CPU_THREADS=2",
           "-e", "STT_ALLOW_OPEN_ACCESS=1", "-e", f"STT_DEVICE={device}", image)
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)
