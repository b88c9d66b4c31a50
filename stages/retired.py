"""Which disabled services this deploy put on the host earlier: the compose, web and autostart stages each take
theirs away (stages/compose_projects.py, web.py, autostart.py)."""

from __future__ import annotations

from pyinfra import host

from stages import marker
from stages.ops import CommandSucceeds
from stages.settings import Platform, ServiceEntry


def retired_services(p: Platform) -> list[ServiceEntry]:
    """The disabled services this deploy put on the host earlier (their compose file carries our
    marker), leaving out any that shares its folder, container or vhost with an enabled one."""
    enabled = {(attr, getattr(svc, attr)) for svc in p.services for attr in ("project_dir", "container", "vhost")}
    return [svc for svc in p.all_services
            if not svc.enabled
            and not any((attr, getattr(svc, attr)) in enabled for attr in ("project_dir", "container", "vhost"))
            and host.get_fact(CommandSucceeds, command=marker.owned_command(svc.project_dir + "/docker-compose.yml"))]
