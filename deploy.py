"""The order of the deploy stages, nothing else (see stages/ for each one, ARCHITECTURE.md for the picture).

    pyinfra inventory.py deploy.py                # apply
    pyinfra inventory.py deploy.py --dry --diff   # show what would change
"""

from pyinfra import host

from stages import (autostart, backup, compose_projects, gpu, identity, images, link, model_store, monitoring,
                    packages, redis, secrets_env, sweep, web, workers)
from stages.settings import Platform, WorkerHost

if "workers" in host.groups:
    # a worker host: Docker, its services' images and models, RQ workers on the link to the front
    worker = WorkerHost.from_group_data(host.data)
    platform = Platform.from_group_data(host.data, service_overrides_extra=worker.service_overrides(host.data))
    workers.worker_packages(platform)
    gpu.nvidia_runtime(platform)   # a cuda worker host: the NVIDIA runtime
    images.seed_images(platform)
    model_store.model_store(platform)
    images.build_images(platform)
    workers.worker_projects(platform, worker)
else:
    # settings and secrets first: a bad group_data value, or a missing or unsafe secret, stops the deploy before
    # anything changes on the host; an absent optional secret keeps the host's value. The sandbox hosts read
    # their throwaway values from .sandbox/.
    platform = Platform.from_group_data(host.data)
    if "brownfield" in host.groups:
        env_secrets = secrets_env.load(sandbox=secrets_env.BROWNFIELD_SECRETS)
    else:
        env_secrets = secrets_env.load(sandbox="sandbox" in host.groups)

    # restore_from (a fresh host from a backup): the archive checked, its secrets put back before any stage
    # below would generate one
    backup.restore(platform, env_secrets)
    compose_projects.ensure_api_key(env_secrets, platform)    # the services refuse to run without one

    packages.install_packages(platform)
    gpu.nvidia_runtime(platform)   # hosts with a cuda service only: zero operations elsewhere
    images.seed_images(platform)
    model_store.model_store(platform)
    images.build_images(platform)
    redis.redis_server(platform)
    backup.restore_redis(platform)   # a restore: the backup's Redis snapshot, once Redis runs
    link.front_link(platform)   # the worker hosts' job interface (nginx on the link); nothing without any
    identity.proxy_key(platform)   # before the compose files and nginx's auth map that read it
    compose_projects.compose_projects(platform, env_secrets)
    sweep.sweep_timer(platform)   # expired job files go on time, also while a service is stopped
    web.nginx_base(platform, env_secrets)
    web.certificates(platform)
    web.nginx_vhosts(platform, env_secrets)
    autostart.autostart_proxy(platform)
    monitoring.monitoring(platform, env_secrets)   # Prometheus, Alertmanager, exporters (monitoring_enabled False: removed)
    # services turned off (enabled False) that an earlier run put here: containers down, last, once
    # nginx and the proxy no longer route to them (image, .env and models kept)
    compose_projects.retire_services(platform)
    backup.backups(platform, env_secrets)   # the backup timer (backup_recipients)
    backup.resume_jobs(platform)   # a restore: services with waiting jobs started, the restore marked complete
