"""Worker hosts (inventory group `workers`): Docker, the images and models of the services the host serves, its
link credentials (stages/link.py: TLS certificate and key, its token) and one compose project per service of
workers that take jobs through the front's link interface. No nginx, no Redis (nor any Redis credential), no
autostart proxy, nothing listening.

Knobs per host (stages.settings.WorkerHost, docs/knobs.md): worker_services, worker_model, worker_device, worker_compute_type,
worker_concurrency, worker_cpu_threads. `device` is passed to the services as STT_DEVICE, and a cuda worker
gets compose's GPU reservation (the NVIDIA runtime and GPU images are another stage's).
"""

from __future__ import annotations

import shlex

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
from stages.settings import REPO, Platform, WorkerHost, knob_values


def front_host():
    """The host whose jobs the workers take: the one outside `workers` that has a link_address."""
    fronts = [h for h in iter(inventory)
              if "workers" not in h.groups and knob_values(h.data, "link_address")["link_address"]]
    if len(fronts) != 1:
        raise ValueError(f"worker hosts need exactly one front host with a link_address, found "
                         f"{[h.name for h in fronts]}")
    return fronts[0]


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
    front = knob_values(front_host().data, "link_address", "link_https_port", "link_pki_dir")
    address = front["link_address"]
    folder = link.pki_dir(front["link_pki_dir"])
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
            link_https_port=front["link_https_port"], worker_name=host.name, jobs=jobs,
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
