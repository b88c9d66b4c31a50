"""The order of the deploy stages, nothing else (see stages/ for each one).

    pyinfra inventory.py deploy.py            # apply
    pyinfra inventory.py deploy.py --dry --diff   # show what would change
"""

from pyinfra import host

from stages import autostart, images, packages, redis, secrets_env, services, web

# secrets first: a missing one stops the deploy before anything changes on the host
secrets = secrets_env.load(sandbox="sandbox" in host.groups)

packages.install_packages()
images.seed_images()
services.model_store()
images.build_images()
redis.redis_server()
services.compose_projects(secrets)
web.nginx_base(secrets)
web.certificates()
web.nginx_vhosts()
autostart.autostart_proxy()
