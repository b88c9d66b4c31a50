"""Stage "autostart": the services' registration in the autostart proxy's config.json, keeping
every other entry byte-for-byte, and the proxy itself (installed when `autostart_install` is True;
False keeps a host's own proxy and only restarts it when its config changed). A retired service's
entry (a disabled service this deploy put there: its compose file carries our marker and the entry
names its project folder) is cut out the same byte-preserving way; the proxy reloads (or, its own,
restarts) only when config.json changed."""

import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from stages import link, marker
from stages.autostart_registry import entry_for, merge_services, registered, remove_services
from stages.monitoring_config import targets_file
from stages.ops import CommandSucceeds, RawFile, render_template, synced_tree, text_source
from stages.retired import retired_services
from stages.settings import REPO, GroupDataError, Platform
from stages.signals import beyond_header, changed, reload_unit, restart_existing_unit, restart_unit

UNIT = "docker-autostart"
# the proxy's own journal namespace (autostart_journal_max_use): a size cap for its logs alone
JOURNAL_NAMESPACE = "whisper-platform"
JOURNALD_CONF = f"/etc/systemd/journald@{JOURNAL_NAMESPACE}.conf"


def journald_conf(max_use: str) -> str:
    return (f"# The autostart proxy's journal namespace (LogNamespace= in its unit): {marker.MARKER}. Capped\n"
            "# here; the host's own journal and its settings are not touched.\n"
            f"[Journal]\nSystemMaxUse={max_use}\nRuntimeMaxUse={max_use}\n")


@deploy("Autostart proxy")
def autostart_proxy(p: Platform):
    config = p.autostart_config
    config_dir = config.rsplit("/", 1)[0]
    files.directory(name="Autostart config folder", path=config_dir, mode="755")

    current = host.get_fact(RawFile, path=config)
    wanted = {svc.vhost: entry_for(svc, p, link.relays(svc.key)) for svc in p.services}
    merged: str | None = merge_services(current, wanted)   # remove_services hands back str | None
    retired = [svc.vhost for svc in retired_services(p)
               if (registered(current, svc.vhost) or {}).get("composeDir") == svc.project_dir]
    if retired:
        merged = remove_services(merged, retired)
        host.log(f"Will remove the autostart entries of the retired service(s) {', '.join(retired)} from {config}")
    config_op = files.put(
        name="Register services in the autostart config",
        src=io.StringIO(merged),
        dest=config,
        mode="644" if not host.get_fact(File, path=config) else None,
    )

    if not p.autostart_install:
        if not host.get_fact(CommandSucceeds, command=f"systemctl cat {UNIT}.service"):
            # nothing would answer nginx's requests: stop before anything changes (operations run after all are planned)
            raise GroupDataError("autostart_install", f"False keeps the host's own proxy, but this host has no {UNIT} "
                                                      "unit: set it True to install ours")
        # the host keeps its own proxy: restart it only when its config changed
        restart_existing_unit(UNIT, changed(config_op), "its config changed")
        return

    install_dir = f"{p.platform_dir}/autostart"
    # a host's own proxy (the runbook's Node server.js): its unit is kept in the backup folder before ours
    # replaces it (its code in /opt/docker-autostart stays where it is)
    unit_path = f"/etc/systemd/system/{UNIT}.service"
    if host.get_fact(File, path=unit_path) and not host.get_fact(
            CommandSucceeds, command=marker.owned_command(unit_path)):
        backup = f"{p.takeover_backup_dir}/autostart"
        server.shell(name=f"Keep the host's own autostart unit in {backup}",
                     commands=[f"install -d -m 700 {backup}", f"cp -a {unit_path} {backup}/"])
    code = synced_tree("Autostart proxy code", str(REPO / "autostart" / "docker_autostart"),
                       f"{install_dir}/docker_autostart", exclude=["*.pyc"], exclude_dir=["__pycache__", "*/__pycache__"])
    namespace = JOURNAL_NAMESPACE if p.autostart_journal_max_use else ""
    # the unit and the journal's settings, their headers apart (stages.signals.beyond_header): one command for both
    batch = (unit_path, JOURNALD_CONF)
    if namespace:
        journal_text = journald_conf(p.autostart_journal_max_use)
        journal = beyond_header(files.put(name=f"The proxy's journal namespace, capped at {p.autostart_journal_max_use}",
                                          src=io.StringIO(journal_text), dest=JOURNALD_CONF, mode="644"),
                                JOURNALD_CONF, journal_text, batch)
        # journald reads its settings when it starts: the namespace's instance, not the host's journald
        server.shell(name="Restart the namespace's journald (its cap changed)",
                     commands=[f"systemctl try-restart systemd-journald@{JOURNAL_NAMESPACE}.service"],
                     _if=changed(journal))
    else:
        journal = files.file(name="No journal namespace for the proxy (autostart_journal_max_use empty)",
                             path=JOURNALD_CONF, present=False)
    unit_text = render_template(
        REPO / "templates/systemd/docker-autostart.service.j2",
        install_dir=install_dir,
        config_path=config,
        listen=f"{p.autostart_listen_host}:{p.autostart_port}",
        # the monitoring stage's file_sd file of the running services (autostart/docker_autostart/monitoring.py)
        targets_file=targets_file(p) if p.monitoring_enabled else "",
        journal_namespace=namespace,
    )
    unit_put = files.put(name="Autostart proxy systemd unit", src=text_source(unit_text), dest=unit_path, mode="644")
    systemd.daemon_reload(name="systemd daemon-reload (unit changed)", _if=changed(unit_put))
    # a unit whose header alone changed (an earlier version's marker) restarts nothing: the proxy runs the same way
    unit = beyond_header(unit_put, unit_path, unit_text, batch)
    systemd.service(name="Autostart proxy running and enabled", service=UNIT, running=True, enabled=True)
    restart_unit(UNIT, changed(code, unit, journal), "its code, unit or journal changed")
    # a config change alone is picked up without a restart (no request in flight is cut)
    reload_unit(UNIT, changed(config_op, unless=(code, unit)), "its config changed")

