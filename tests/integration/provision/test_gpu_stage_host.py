"""The GPU stage applied for real, over SSH, to a fresh systemd host in Docker (the sandbox host image, a container of
its own): NVIDIA's apt repository comes from group_data with its signing key, apt checks the signature, installs the
toolkit, Docker gets the nvidia runtime and is restarted, and a second run changes nothing.

The one stand-in, at the edge of what the test bed reaches: NVIDIA's package repository. A flat apt repository built
here, signed with a throwaway key and copied onto the host (a file: URL), holds a stand-in `nvidia-container-toolkit`
whose `nvidia-ctk runtime configure --runtime=docker` registers the runtime in /etc/docker/daemon.json as the real
one does. No GPU or driver is involved: the stage only warns about the missing driver."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from email.utils import formatdate
from pathlib import Path

import pytest
from support.throwaway_host import sh, systemd_host

REPO = Path(__file__).resolve().parents[3]
PYINFRA = Path(sys.executable).with_name("pyinfra")
REMOTE_REPO = "/srv/nvidia-standin"
pytestmark = [pytest.mark.docker, pytest.mark.slow]

NVIDIA_CTK = """#!/bin/sh
# stand-in for NVIDIA's nvidia-ctk (tests only): `runtime configure --runtime=docker` adds the nvidia runtime to
# Docker's daemon.json, keeping what is there, as the real tool does
[ "$1 $2 $3" = "runtime configure --runtime=docker" ] || { echo "stand-in nvidia-ctk: unsupported: $*" >&2; exit 2; }
exec python3 - <<'EOF'
import json, os
path = "/etc/docker/daemon.json"
cfg = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
cfg.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
os.makedirs("/etc/docker", exist_ok=True)
with open(path, "w") as f:
    json.dump(cfg, f, indent=4)
print("stand-in nvidia-ctk: nvidia runtime added to", path)
EOF
"""

DEPLOY = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pyinfra.operations import apt, systemd
from pyinfra import host
from stages import gpu
from stages.settings import Platform

# what the packages stage gives every host before this one: Docker
apt.packages(name="Docker", packages=["docker.io"], update=True, cache_time=24 * 3600, no_recommends=True,
             _env={{"DEBIAN_FRONTEND": "noninteractive"}})
systemd.service(name="Docker running", service="docker", running=True, enabled=True)
gpu.nvidia_runtime(Platform.from_group_data(host.data))
"""



def build_repository(folder: Path) -> Path:
    """The stand-in flat repository (signed InRelease, Packages, the .deb) in `folder`; returns the armored key."""
    for tool in ("dpkg-deb", "dpkg-scanpackages", "gpg"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install dpkg-dev gnupg)")
    pkg = folder / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: nvidia-container-toolkit\nVersion: 0.0.0-standin\nArchitecture: all\n"
        "Maintainer: whisper-platform tests <tests@invalid>\nDepends: python3\n"
        "Description: stand-in for NVIDIA's container toolkit (tests only)\n")
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "usr/bin/nvidia-ctk").write_text(NVIDIA_CTK)
    (pkg / "usr/bin/nvidia-container-runtime").write_text("#!/bin/sh\nexec runc \"$@\"\n")
    for f in (pkg / "usr/bin").iterdir():
        f.chmod(0o755)
    repo = folder / "repo"
    repo.mkdir()
    sh("dpkg-deb", "--root-owner-group", "-b", str(pkg), str(repo / "nvidia-container-toolkit_0.0.0-standin_all.deb"))
    packages = sh("dpkg-scanpackages", "--multiversion", ".", cwd=repo).stdout
    (repo / "Packages").write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    (repo / "Release").write_text(
        f"Origin: whisper-platform tests\nLabel: nvidia stand-in\nDate: {formatdate(usegmt=True)}\n"
        f"SHA256:\n {digest} {len(packages.encode())} Packages\n")
    home = tempfile.mkdtemp(prefix="/tmp/gpg-")   # a short path: gpg-agent's socket name has a length limit
    try:
        gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        sh(*gpg, "--quick-gen-key", "whisper-platform test repository <repo@invalid>", "ed25519", "sign", "never")
        sh(*gpg, "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release"))
        key = folder / "nvidia-standin.asc"
        key.write_text(sh(*gpg, "--armor", "--export").stdout)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return key


@pytest.fixture(scope="module")
def gpu_host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-host")
    key = build_repository(tmp)
    with systemd_host(tmp, "gpu-stage", docker_args=("-v", "{name}-docker:/var/lib/docker"),
                      copy={tmp / "repo": REMOTE_REPO}) as name:
        (tmp / "deploy.py").write_text(DEPLOY)
        yield {"name": name, "tmp": tmp, "key": key}


def deploy(host, *extra):
    args = [str(PYINFRA), str(host["tmp"] / "inventory.py"), str(host["tmp"] / "deploy.py"), "-y",
            "--data", 'service_overrides={"faster": {"device": "cuda", "build_args": {"DEVICE": "cuda"}}}',
            "--data", f"nvidia_apt_repo=file:{REMOTE_REPO}", "--data", f"nvidia_apt_key={host['key']}", *extra]
    # group_data/ (all.py) from the repository, as in a real deploy
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    return r


def on_host(host, command):
    return sh("docker", "exec", host["name"], "sh", "-c", command).stdout


def test_runtime_installed_then_nothing_to_do(gpu_host):
    first = deploy(gpu_host)
    assert "no NVIDIA driver found" in first.stdout + first.stderr   # no GPU here: said, not fatal
    assert on_host(gpu_host, "cat /etc/apt/sources.list.d/whisper-platform-nvidia-container-toolkit.list") == \
        f"deb [signed-by=/usr/share/keyrings/whisper-platform-nvidia-container-toolkit.asc] file:{REMOTE_REPO} /\n"
    assert on_host(gpu_host, "dpkg-query -W -f '${Version}' nvidia-container-toolkit") == "0.0.0-standin"
    runtimes = json.loads(on_host(gpu_host, "docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes   # Docker was restarted with the runtime registered

    second = deploy(gpu_host, "--json")
    totals = json.loads(second.stdout)["results"]["totals"]
    assert totals["success"] == 0, second.stdout[-3000:]   # a second converge changes nothing


def test_unsigned_repository_is_refused(gpu_host, tmp_path):
    """apt checks the repository against the key from group_data: with another key, a host that has not read the
    repository yet (no index files of it: apt would otherwise keep the previous ones, with a warning) gets nothing."""
    other = tmp_path / "other.asc"
    home = tempfile.mkdtemp(prefix="/tmp/gpg-")
    try:
        gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        sh(*gpg, "--quick-gen-key", "someone else <other@invalid>", "ed25519", "sign", "never")
        other.write_text(sh(*gpg, "--armor", "--export").stdout)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    on_host(gpu_host, "apt-get remove -y -q nvidia-container-toolkit >/dev/null; rm -f /var/lib/apt/lists/*nvidia-standin*")
    args = [str(PYINFRA), str(gpu_host["tmp"] / "inventory.py"), str(gpu_host["tmp"] / "deploy.py"), "-y",
            "--data", 'service_overrides={"faster": {"device": "cuda", "build_args": {"DEVICE": "cuda"}}}',
            "--data", f"nvidia_apt_repo=file:{REMOTE_REPO}", "--data", f"nvidia_apt_key={other}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode != 0, r.stdout[-3000:]
    assert "NO_PUBKEY" in r.stdout + r.stderr or "not signed" in r.stdout + r.stderr, r.stdout[-3000:]
    assert on_host(gpu_host, "dpkg-query -W -f '${Status}' nvidia-container-toolkit 2>/dev/null || true") \
        != "install ok installed"
