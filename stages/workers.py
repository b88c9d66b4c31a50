"""Worker hosts (inventory group `workers`): Docker, the images and models of the services the host serves, its
link credentials (stages/link.py: TLS certificate and key, its token) and one compose project per service of
workers that take jobs through the front's link interface. No nginx, no Redis (nor any Redis credential), no
autostart proxy, nothing listening.

Knobs per host (group_data/workers.py): worker_services, worker_model, worker_device, worker_compute_type,
worker_concurrency, worker_cpu_threads. `device` is passed to the services as STT_DEVICE, and a cuda worker
gets compose's GPU reservation (the NVIDIA runtime and GPU images are another stage's).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server, systemd

from stages import link
from stages.compose_projects import body_limit_mb, log_settings
from stages.images import image_tag
from stages.ops import ComposeFlavour, ContainerImage, compose_command, secret_file, text_source
from stages.secrets_env import Secret
from stages.signals import changed, changed_or_stopped
from stages.settings import (REPO, DEVICES, GroupDataError, Platform, _abs_path, _choice, _compute_type, _model,
                             _positive, _type)


def front_host():
    """The host whose jobs the workers take: the one outside `workers` that has a link_address."""
    fronts = [h for h in iter(inventory) if "workers" not in h.groups and h.data.get("link_address")]
    if len(fronts) != 1:
        raise ValueError(f"worker hosts need exactly one front host with a link_address, found "
                         f"{[h.name for h in fronts]}")
    return fronts[0]


@dataclass(frozen=True)
class WorkerHost:
    """A worker host's own knobs (group_data/workers.py, or its host data in the inventory), checked."""

    services: tuple[str, ...]   # which services' jobs it takes
    model: str                  # "" = each service's model
    device: str
    compute_type: str           # "" = int8 on cpu, float16 on cuda
    concurrency: int            # RQ workers per service
    cpu_threads: int
    project_dir: str            # <dir>-<service>: one compose project per service
    link_dir: str

    @classmethod
    def from_group_data(cls, data) -> "WorkerHost":
        def get(name):
            value = data.get(name)
            if value is None:
                raise GroupDataError(name, "missing (its default lives in group_data/workers.py)")
            return value

        known = {entry["key"] for entry in get("services")}
        services = tuple(_type("worker_services", get("worker_services"), (list, tuple), "a list of service keys"))
        for key in services:
            if key not in known:
                raise GroupDataError("worker_services", f"no service has the key {key!r} (known: {', '.join(known)})")
        return cls(services=services, model=_model("worker_model", get("worker_model"), empty=True),
                   device=_choice("worker_device", get("worker_device"), DEVICES),
                   compute_type=_compute_type("worker_compute_type", get("worker_compute_type")),
                   concurrency=_positive("worker_concurrency", get("worker_concurrency")),
                   cpu_threads=_positive("worker_cpu_threads", get("worker_cpu_threads"), zero=True),
                   project_dir=_abs_path("worker_project_dir", get("worker_project_dir")),
                   link_dir=_abs_path("worker_link_dir", get("worker_link_dir")))

    def service_overrides(self, data) -> dict:
        """The host's knobs as per-service overrides: only its services enabled, its model, device, threads."""
        knobs = {}
        for entry in data.get("services"):
            over = {"enabled": entry["key"] in self.services, "device": self.device,
                    "compute_type": self.compute_type or ("float16" if self.device == "cuda" else "int8"),
                    "cpu_threads": self.cpu_threads}
            if self.model:
                over["model"] = self.model
            if self.device == "cuda":   # the GPU variant of the image (stages/gpu.py checks it)
                over["build_args"] = {"DEVICE": "cuda"}
            knobs[entry["key"]] = over
        return knobs


@deploy("Worker host: Docker")
def worker_packages(p: Platform):
    packages = ["openssl", "ca-certificates", "python3"]
    if not (host.get_fact(Which, command="dockerd") or host.get_fact(Which, command="docker")):
        packages.append("docker.io")
    flavour = host.get_fact(ComposeFlavour)
    if flavour in ("pkg-v2", "pkg-v1"):
        packages.append("docker-compose-v2" if flavour == "pkg-v2" else "docker-compose")
    install = apt.packages(name="Install Docker", packages=packages, update=True, cache_time=24 * 3600,
                           no_recommends=True, _env={"DEBIAN_FRONTEND": "noninteractive"})
    server.shell(name="Start Docker after its installation", commands=["systemctl enable --now docker"],
                 _if=changed(install))
    systemd.service(name="Docker running and enabled", service="docker", running=True, enabled=True)
    files.directory(name="State folder", path=p.state_dir, mode="755")


@deploy("Worker host: RQ workers on the link")
def worker_projects(p: Platform, w: WorkerHost):
    front = front_host()
    address = front.data.link_address
    folder = link.pki_dir(front.data.get("link_pki_dir"))
    ca_cert = link.ca(folder)[0]
    from cryptography.hazmat.primitives import serialization
    cert, key = link.issue(folder, host.name)
    token = link.worker_token(folder, host.name)
    staging = f"{p.state_dir}/staging"

    files.directory(name="Link credentials folder", path=w.link_dir, user="root", group=p.app_user,
                    mode="750")
    creds = [
        files.put(name="Link CA certificate", src=text_source(ca_cert.public_bytes(serialization.Encoding.PEM).decode()),
                  dest=f"{w.link_dir}/ca.crt", mode="644"),
        files.put(name="This worker host's link certificate", src=text_source(cert),
                  dest=f"{w.link_dir}/worker.crt", mode="644"),
        secret_file(name="This worker host's link key (secret)", path=f"{w.link_dir}/worker.key",
                    content=key, staging_dir=staging, mode="640", user="root", group=p.app_user),
    ]
    jobs = {"ttl": p.job_ttl, "max_seconds": p.job_max_seconds, "retries": p.job_retries}
    compose = compose_command(host.get_fact(ComposeFlavour))
    for svc in p.services:
        project = f"{w.project_dir}-{svc.key}"
        q = shlex.quote(project)
        files.directory(name=f"{svc.key}: worker project folder", path=project, mode="755")
        env = secret_file(name=f"{svc.key}: worker .env (its link token, secret)", path=f"{project}/.env",
                          content=Secret(f"# this worker host's token for the front's job interface: written by the "
                                         f"deploy, root-only\nSTT_LINK_TOKEN={token.reveal()}\n"),
                          staging_dir=staging, mode="600")
        compose_file = files.template(
            name=f"{svc.key}: worker docker-compose.yml", src=str(REPO / "templates/compose/worker.yml.j2"),
            dest=f"{project}/docker-compose.yml", mode="644", svc=svc, image_tag=image_tag(svc, p),
            concurrency=w.concurrency, timezone=p.timezone, hf_cache_dir=p.hf_cache_dir,
            models_dir=p.models_dir, link_dir=w.link_dir, link_address=address,
            link_https_port=int(front.data.link_https_port), worker_name=host.name, jobs=jobs,
            body_limit_mb=body_limit_mb(p.body_limit), logs=log_settings(p))
        running = host.get_fact(ContainerImage, container=f"{svc.container}-worker-1")
        server.shell(name=f"{svc.key}: (re)start the workers",
                     commands=[f"cd {q} && {compose} up -d --remove-orphans"],
                     _if=changed_or_stopped(running, env, compose_file, *creds))
    # a service no longer in worker_services: its workers stop
    for entry in p.all_services:
        if entry in p.services:
            continue
        project = f"{w.project_dir}-{entry.key}"
        q = shlex.quote(project)
        if host.get_fact(ContainerImage, container=f"{entry.container}-worker-1"):
            server.shell(name=f"{entry.key}: stop its workers (not in worker_services)",
                         commands=[f"cd {q} && {compose} down"])
