"""A throwaway systemd host for the integration tier's stage tests: the sandbox host image (make sandbox builds it)
run as a container, root over SSH on a random 127.0.0.1 port, with a pyinfra inventory for it."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

HOST_IMAGE = "whisper-sandbox-host:latest"


def sh(*args, check=True, timeout=300, **kw):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout, **kw)


@contextmanager
def systemd_host(tmp: Path, role: str, docker_args: tuple = (), copy: dict | None = None):
    """Yields the running host's container name; `tmp` gets its SSH key and `inventory.py`. `docker_args` are
    added to `docker run` (volumes: a volume named <name>-docker is removed with the host); `copy` puts local
    paths at host paths before systemd is awaited. Skips where Docker or the image is missing."""
    if not shutil.which("docker") or sh("docker", "info", check=False).returncode != 0:
        pytest.skip("no Docker engine (make docker)")
    if sh("docker", "image", "inspect", HOST_IMAGE, check=False).returncode != 0:
        pytest.skip(f"no {HOST_IMAGE} image (make sandbox builds it)")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id_ed25519"))
    name = f"whisper-{role}-{os.getpid()}"
    sh("docker", "run", "-d", "--name", name, "--hostname", name, "--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
       "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--cgroupns=host",
       "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
       *[a.replace("{name}", name) for a in docker_args], "-p", "127.0.0.1::22", HOST_IMAGE)
    try:
        port = sh("docker", "port", name, "22/tcp").stdout.split(":")[-1].strip()
        sh("docker", "exec", "-i", name, "sh", "-c", "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
           input=(tmp / "id_ed25519.pub").read_text())
        for src, dest in (copy or {}).items():
            sh("docker", "cp", str(src), f"{name}:{dest}")
        for _ in range(60):
            state = sh("docker", "exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        (tmp / "inventory.py").write_text(
            f"hosts = [({name!r}, {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'ssh_user': 'root', "
            f"'ssh_key': {str(tmp / 'id_ed25519')!r}, 'ssh_known_hosts_file': {str(tmp / 'known_hosts')!r}, "
            f"'ssh_strict_host_key_checking': 'accept-new'}})]\n")
        yield name
    finally:
        sh("docker", "rm", "-f", name, check=False)
        sh("docker", "volume", "rm", f"{name}-docker", check=False)
