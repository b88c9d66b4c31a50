"""GPU hosts: the NVIDIA container runtime where a service's device is "cuda".

Nothing at all (zero operations) on a host where no service runs on cuda. Where one does:
- its image must be the GPU variant (build_args {"DEVICE": "cuda"}: images/faster/Dockerfile adds cuBLAS/cuDNN,
  images/whisperx/Dockerfile registers torch's CUDA libraries); the deploy stops before any change otherwise;
- NVIDIA's container toolkit (nvidia-container-toolkit) is installed from NVIDIA's apt repository, whose address
  comes from group_data `nvidia_apt_repo` (empty by default: this project names no package host) with the signing
  key from `nvidia_apt_key` (a local file the operator fetched and checked). A host that already has the toolkit
  or an apt source for it needs neither; without both the deploy stops with a message saying what to set;
- Docker gets the "nvidia" runtime (`nvidia-ctk runtime configure --runtime=docker`) and is restarted once, when
  that changed its daemon.json. The compose template reserves the GPUs (templates/compose/service.yml.j2).

The NVIDIA driver itself is the host's (the provider's image or the operator's): a host without one gets a warning,
and its cuda services answer 503 device_unavailable until it has one.
"""

from __future__ import annotations

import logging

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, server

from stages import apt_sources
from stages.ops import CommandSucceeds
from stages.settings import Platform, ServiceEntry

logger = logging.getLogger("pyinfra")
KEYRING = "/usr/share/keyrings/whisper-platform-nvidia-container-toolkit.asc"
SOURCE = "/etc/apt/sources.list.d/whisper-platform-nvidia-container-toolkit.list"
PACKAGE = "nvidia-container-toolkit"
# the toolkit is installed, or some apt source offers it (the operator's own, or a mirror)
HAS_TOOLKIT = f"command -v nvidia-ctk >/dev/null || apt-cache policy {PACKAGE} 2>/dev/null | grep -q 'Candidate: [^(]'"
DOCKER_HAS_RUNTIME = "grep -qs '\"nvidia\"' /etc/docker/daemon.json"
HAS_DRIVER = "test -e /dev/nvidiactl || command -v nvidia-smi >/dev/null"


class GPUSetupError(ValueError):
    """A cuda service this host cannot get ready: raised before anything changes on it."""


def cuda_services(p: Platform) -> list[ServiceEntry]:
    return [svc for svc in p.services if svc.device == "cuda"]


def check_images(svcs: list[ServiceEntry]) -> None:
    """A cuda service runs the GPU variant of its image (the CPU one has no cuBLAS/cuDNN)."""
    for svc in svcs:
        if svc.build_args.get("DEVICE") != "cuda":
            raise GPUSetupError(
                f"service {svc.key!r} has device 'cuda' but builds the CPU image: add "
                f"'build_args': {{'DEVICE': 'cuda'}} next to its device in group_data (service_overrides)")


def source_line(repo: str) -> str:
    """The apt line for `nvidia_apt_repo` (NVIDIA's is a flat repository: " /" is added)."""
    return apt_sources.source_line(repo, KEYRING)


def missing_source_message(hostname: str) -> str:
    return (f"{hostname}: a service has device 'cuda' but the host has no NVIDIA container toolkit and no apt source "
            f"for {PACKAGE}. Set nvidia_apt_repo (NVIDIA's container toolkit apt repository, as its install guide "
            f"names it) and nvidia_apt_key (a local copy of that repository's signing key) in the host's "
            f"group_data, or add the apt source on the host yourself.")


@deploy("GPU: NVIDIA container runtime")
def nvidia_runtime(p: Platform):
    cuda = cuda_services(p)
    if not cuda:
        return  # no operation, no fact: CPU hosts deploy exactly as before
    check_images(cuda)
    repo = p.nvidia_apt_repo.strip()
    key = p.nvidia_apt_key.strip()
    problem = repo and apt_sources.key_file_problem("nvidia_apt_repo", "nvidia_apt_key", key)
    if problem:
        raise GPUSetupError(problem)
    if not repo and not host.get_fact(CommandSucceeds, command=HAS_TOOLKIT):
        raise GPUSetupError(missing_source_message(host.name))
    if not host.get_fact(CommandSucceeds, command=HAS_DRIVER):
        host.log(f"no NVIDIA driver found (/dev/nvidiactl, nvidia-smi): the cuda services "
                 f"({', '.join(s.key for s in cuda)}) answer 503 device_unavailable until one is installed",
                 log_func=logger.warning)

    if repo:
        apt_sources.signed_source("NVIDIA container toolkit", repo, key, KEYRING, SOURCE)
    apt.packages(name=f"Install {PACKAGE}", packages=[PACKAGE], no_recommends=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    # facts are read before anything runs: "not configured yet" also holds on a host that gets the toolkit now
    if not host.get_fact(CommandSucceeds, command=DOCKER_HAS_RUNTIME):
        server.shell(name="Docker: add the nvidia runtime (nvidia-ctk), restart Docker",
                     commands=["nvidia-ctk runtime configure --runtime=docker", "systemctl restart docker"])
