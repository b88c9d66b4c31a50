"""Stage 7: the autostart proxy (installed when group data asks) and the services'
registration in its config.json, keeping every other entry byte-for-byte."""

import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from stages.autostart_config import entry_for, merge_services
from stages.config import REPO, services
from stages.ops import CommandSucceeds, RawFile

UNIT = "docker-autostart"


@deploy("Autostart proxy")
def autostart_proxy():
    data = host.data
    config = data.autostart_config
    config_dir = config.rsplit("/", 1)[0]
    files.directory(name="Autostart config folder", path=config_dir, mode="755")

    current = host.get_fact(RawFile, path=config)
    wanted = {svc["vhost"]: entry_for(svc, data) for svc in services(data)}
    merged = merge_services(current, wanted)
    config_op = files.put(
        name="Register services in the autostart config",
        src=io.StringIO(merged),
        dest=config,
        mode="644" if not host.get_fact(File, path=config) else None,
    )

    if not data.autostart_install:
        # the host keeps its own proxy: restart it only when its config changed
        systemd.service(name="Restart the host's autostart proxy (config changed)", service=UNIT,
                        restarted=True, _if=config_op.did_change)
        return

    install_dir = f"{data.platform_dir}/autostart"
    # a host's own proxy (the runbook's Node server.js): its unit is kept in the backup folder before ours
    # replaces it (its code in /opt/docker-autostart stays where it is)
    unit_path = f"/etc/systemd/system/{UNIT}.service"
    if host.get_fact(File, path=unit_path) and not host.get_fact(
            CommandSucceeds, command=f"grep -q 'Managed by whisper-platform' {unit_path}"):
        backup = f"{data.takeover_backup_dir}/autostart"
        server.shell(name=f"Keep the host's own autostart unit in {backup}",
                     commands=[f"install -d -m 700 {backup}", f"cp -a {unit_path} {backup}/"])
    code = files.sync(
        name="Autostart proxy code",
        src=str(REPO / "autostart" / "docker_autostart"),
        dest=f"{install_dir}/docker_autostart",
        delete=True,
        exclude=["*.pyc"],
        exclude_dir=["__pycache__", "*/__pycache__"],
    )
    unit = files.template(
        name="Autostart proxy systemd unit",
        src=str(REPO / "templates/systemd/docker-autostart.service.j2"),
        dest=f"/etc/systemd/system/{UNIT}.service",
        mode="644",
        install_dir=install_dir,
        config_path=config,
        listen=f"{data.autostart_listen_host}:{data.autostart_port}",
    )
    systemd.daemon_reload(name="systemd daemon-reload (unit changed)", _if=unit.did_change)
    systemd.service(name="Autostart proxy running and enabled", service=UNIT, running=True, enabled=True)
    systemd.service(
        name="Restart the autostart proxy (its code or unit changed)",
        service=UNIT,
        restarted=True,
        _if=lambda: unit.did_change() or code.did_change(),
    )
    # a config change alone is picked up without a restart (no request in flight is cut)
    server.shell(name="Autostart proxy reloads its config", commands=[f"systemctl reload {UNIT}"],
                 _if=lambda: config_op.did_change() and not (unit.did_change() or code.did_change()))
