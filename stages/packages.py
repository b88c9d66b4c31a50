"""Stage "packages": what the host needs installed. An existing Docker is detected and kept
(`docker_install`), and Compose is installed where the host has none (the ComposeFlavour fact,
which stages.compose_projects reads again to pick the command)."""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server, systemd

from stages.ops import ComposeFlavour
from stages.settings import Platform
from stages.signals import changed


@deploy("Packages: Docker, Compose, nginx, certbot")
def install_packages(p: Platform):
    packages = ["nginx", "openssl", "ca-certificates", "python3"]
    if p.tls_mode == "letsencrypt":
        packages.append("certbot")
    if p.autostart_install:
        # the autostart proxy runs on Debian's Python, with Debian's packages (nothing from pip on the host)
        packages += ["python3-aiohttp", "python3-prometheus-client"]

    # Docker: keep whatever engine the host has (docker-ce from Docker's repository
    # included); install the OS package only on a host that has none.
    has_docker = bool(host.get_fact(Which, command="dockerd") or host.get_fact(Which, command="docker"))
    if p.docker_install == "auto" and not has_docker:
        packages.append("docker.io")
    flavour = host.get_fact(ComposeFlavour)
    if flavour == "pkg-v2":
        packages.append("docker-compose-v2")
    elif flavour == "pkg-v1":
        packages.append("docker-compose")

    install = apt.packages(
        name="Install packages",
        packages=packages,
        update=True,
        cache_time=24 * 3600,
        no_recommends=True,
        _env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    # facts are read before anything runs: on a fresh host the units do not exist yet
    server.shell(
        name="Start Docker and nginx after their installation",
        commands=["systemctl enable --now docker nginx"],
        _if=changed(install),
    )
    systemd.service(name="Docker running and enabled", service="docker", running=True, enabled=True)
    systemd.service(name="nginx running and enabled", service="nginx", running=True, enabled=True)
    files.directory(name="State folder", path=p.state_dir, mode="755")
