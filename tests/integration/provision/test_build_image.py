"""stages/host/build_image.py against the real Docker engine: a silent build is stopped after the stall
limit (a slow one that prints is not), and the next run resumes from the layers finished before the stop;
a wheelhouse folder reaches pip inside the build through the loopback."""
import secrets
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "stages/host/build_image.py"
BASE = "local/python:3.11-slim"


def build(context: Path, tag: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tag", tag, "--file", str(context / "Dockerfile"),
         "--log", str(context / "build.log"), *args, str(context)],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module", autouse=True)
def docker_and_base():
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine (make docker)")
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
        subprocess.run(["bash", str(ROOT / "sandbox/base-images.sh")], check=True, timeout=900)


@pytest.fixture
def tag():
    name = f"build-image-test:{secrets.token_hex(4)}"
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True)


def test_stalled_build_stops_and_the_rerun_resumes_from_cache(tmp_path, tag):
    # a unique first layer (the token), then a step whose length the build argument sets
    (tmp_path / "token").write_text(secrets.token_hex(16))
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY token /token\nRUN cp /token /first\n"
        "ARG PAUSE=0\nRUN echo working; sleep $PAUSE; echo done\n")
    # silent for longer than the stall limit: stopped, with heartbeats while it waited
    stalled = build(tmp_path, tag, "--build-arg", "PAUSE=120", "--stall-timeout", "6", "--heartbeat", "2")
    assert stalled.returncode == 124, stalled.stdout + stalled.stderr
    assert "still running" in stalled.stdout
    assert "no output for 6 s: stopping the build" in stalled.stdout
    assert subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0
    # the rerun reuses the layers of the stopped build: only the last step runs again
    resumed = build(tmp_path, tag, "--build-arg", "PAUSE=0", "--stall-timeout", "60")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = resumed.stdout.splitlines()
    assert f"build {tag}: step 2/5 cached" in lines and f"build {tag}: step 3/5 cached" in lines
    assert f"build {tag}: step 5/5 cached" not in lines
    assert lines[-1].startswith(f"build {tag}: done in ")
    full_log = (tmp_path / "build.log").read_text()
    assert "\nworking\n" in full_log  # the whole output is in the log; on screen only the progress lines
    assert all(line.startswith(f"build {tag}: ") for line in lines)


def test_slow_build_that_prints_is_not_stopped(tmp_path, tag):
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 1; done\n")
    r = build(tmp_path, tag, "--stall-timeout", "3")
    assert r.returncode == 0, r.stdout + r.stderr


def test_failed_build_shows_the_end_of_its_log_and_leaves_no_container(tmp_path, tag):
    marker = secrets.token_hex(6)
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo 'the reason it failed {marker}' && exit 3\n")
    r = build(tmp_path, tag)
    assert r.returncode != 0
    assert "failed (exit" in r.stdout and f"| the reason it failed {marker}" in r.stdout
    # the failed step's container is not left behind on the host (a stopped container per failed deploy)
    left = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--format", "{{.Command}}"],
                          capture_output=True, text=True, check=True).stdout
    assert marker not in left


def test_pip_inside_the_build_installs_from_the_wheelhouse(tmp_path, tag):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    # a wheel no index has, so only the wheelhouse can satisfy it (written by hand: a wheel is a zip)
    info = "wheelhouse_probe-1.0.dist-info"
    with zipfile.ZipFile(wheelhouse / "wheelhouse_probe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("wheelhouse_probe/__init__.py", "VALUE = 'from the wheelhouse'\n")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: wheelhouse-probe\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    context = tmp_path / "context"
    shutil.copytree(ROOT / "images/build", context / "build")
    (context / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY build/ /usr/local/lib/image-build/\nARG PIP_WHEELHOUSE_URL=''\n"
        "RUN /usr/local/lib/image-build/pip-install.sh wheelhouse-probe==1.0\n"
        "RUN /opt/venv/bin/python -c 'import wheelhouse_probe as w; print(w.VALUE)'\n")
    r = build(context, tag, "--wheelhouse", str(wheelhouse), "--wheelhouse-port", "3149")
    assert r.returncode == 0, r.stdout + (context / "build.log").read_text()[-3000:]
    log = (context / "build.log").read_text()
    assert "http://127.0.0.1:3149/wheelhouse_probe-1.0-py3-none-any.whl" in log
    assert "from the wheelhouse" in log


def test_a_second_build_of_the_same_image_waits_for_the_first(tmp_path, tag):
    # a deploy started again while the interrupted one's build still runs on the host
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done\n")
    cmd = [sys.executable, str(SCRIPT), "--tag", tag, "--file", str(tmp_path / "Dockerfile"),
           "--log", str(tmp_path / "build.log"), str(tmp_path)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert "started" in first.stdout.readline()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.wait(120) == 0
    assert second.returncode == 0, second.stdout + second.stderr
    assert "another build of this image is running" in second.stdout
    assert second.stdout.splitlines()[-1] == f"build {tag}: done by the build that was running"
