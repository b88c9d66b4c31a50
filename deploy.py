"""The order of the deploy stages, nothing else (see stages/ for each one).

    pyinfra inventory.py deploy.py            # apply
    pyinfra inventory.py deploy.py --dry --diff   # show what would change
"""

from pyinfra import host

from stages import autostart, images, link, packages, redis, secrets_env, services, web, workers

if "workers" in host.groups:
    # a worker host (issue 14): Docker, its services' images and models, RQ workers on the link to the front
    workers.apply_knobs(host.data)
    workers.worker_packages()
    images.seed_images()
    services.model_store()
    images.build_images()
    workers.worker_projects()
else:
    # secrets first: a missing or unsafe one stops the deploy before anything changes on the host; an absent
    # optional one keeps the host's value. The sandbox hosts read their throwaway values from .sandbox/.
    if "brownfield" in host.groups:
        secrets = secrets_env.load(sandbox=secrets_env.BROWNFIELD_SECRETS)
    else:
        secrets = secrets_env.load(sandbox="sandbox" in host.groups)

    services.ensure_api_key(secrets, host.data)   # the services refuse to run without one

    packages.install_packages()
    images.seed_images()
    services.model_store()
    images.build_images()
    redis.redis_server()
    link.front_link()   # Redis TLS and the audio server for the worker hosts; nothing without any
    services.compose_projects(secrets)
    web.nginx_base(secrets)
    web.certificates()
    web.nginx_vhosts(secrets)
    autostart.autostart_proxy()
