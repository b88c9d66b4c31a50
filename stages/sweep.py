"""Stage "sweep": a systemd timer on the front that deletes expired job files every hour
(templates/systemd/whisper-jobs-sweep.*: `python -m stt_common.jobs.sweep` in a one-off container of each
service's worker). On a timer of the host, not in a worker's loop: files expire on time also while the autostart
proxy keeps a service stopped."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from stages.ops import CommandSucceeds, ComposeFlavour, compose_command
from stages.settings import REPO, Platform
from stages.signals import changed

UNIT = "whisper-jobs-sweep"


@deploy("Jobs: hourly sweep of expired files")
def sweep_timer(p: Platform):
    if not p.jobs_enabled:   # jobs turned off: no workers to sweep with
        if host.get_fact(CommandSucceeds, command=f"test -e /etc/systemd/system/{UNIT}.timer"):
            server.shell(name="Sweep timer removed (jobs_enabled False)",
                         commands=[f"systemctl disable --now {UNIT}.timer",
                                   f"rm -f /etc/systemd/system/{UNIT}.timer /etc/systemd/system/{UNIT}.service",
                                   "systemctl daemon-reload"])
        return
    compose = compose_command(host.get_fact(ComposeFlavour))
    projects = [(svc.project_dir, f"{svc.container}-worker") for svc in p.services]
    service = files.template(name="Sweep unit", src=str(REPO / f"templates/systemd/{UNIT}.service.j2"),
                             dest=f"/etc/systemd/system/{UNIT}.service", mode="644", projects=projects,
                             compose=compose)
    timer = files.template(name="Sweep timer", src=str(REPO / f"templates/systemd/{UNIT}.timer.j2"),
                           dest=f"/etc/systemd/system/{UNIT}.timer", mode="644")
    systemd.daemon_reload(name="systemd daemon-reload (sweep units changed)", _if=changed(service, timer))
    systemd.service(name="Sweep timer enabled and running", service=f"{UNIT}.timer", running=True, enabled=True)
