"""Stage "monitoring": Prometheus, Alertmanager and the exporters from the OS packages (prometheus,
prometheus-alertmanager, prometheus-node-exporter, -blackbox-exporter, -redis-exporter, -nginx-exporter),
every listener on 127.0.0.1, and the alert rules of templates/prometheus/ (docs/monitoring.md).

- A Prometheus the host already runs is extended, not replaced. It is the host's own when its
  /etc/default/prometheus sets a command line (ARGS not empty) that is not ours, or the config file it reads
  is not Debian's packaged sample (dpkg's recorded checksum) and not ours (our marker on its first line).
  Then our rule file, scrape jobs and Alertmanager go into its config as marked blocks (every other byte kept),
  `promtool check config` tests the result before it replaces the file, and Prometheus reloads; its own
  flags (listen address, retention) stay its owner's. Otherwise Prometheus runs with our config and flags:
  loopback, retention bounded by time and by size.
- Scraping never wakes a service: every target is a loopback port, never a vhost or the proxy's routing;
  the services are targets only while their containers run (the autostart proxy writes the file_sd file,
  autostart/docker_autostart/monitoring.py); Redis and the job queues are read by the Redis exporter
  (templates/prometheus/jobs.lua.j2), so queues are watched whether their service runs or not. Worker hosts
  report through Redis on the TLS link (their RQ workers' registrations): no plain HTTP between hosts.
- The monitor.<domain> vhost and nginx's stub_status go through the nginx transaction (stages/web.py).
- `monitoring_enabled` False: our units stop, the packages this deploy installed are removed, our files and
  blocks leave; a Prometheus of the host's own keeps running without them.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import apt, files, server, systemd

from stages import apt_sources, link, marker, monitoring_config as mc
from stages.ops import CommandSucceeds, RawFile, secret_file, synced_tree, text_file, text_source
from stages.settings import REPO, GroupDataError, Platform
from stages.signals import beyond_header, changed, reload_unit, restart_unit

PACKAGES = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-blackbox-exporter",
            "prometheus-nginx-exporter"]
REDIS_EXPORTER = "prometheus-redis-exporter"
DEFAULTS = "/etc/default"
REDIS_EXPORTER_ENV = "/etc/whisper-platform/redis-exporter.env"
REDIS_EXPORTER_DROPIN = f"/etc/systemd/system/{REDIS_EXPORTER}.service.d/whisper-platform.conf"
DEBIAN_PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"


def packages(p: Platform) -> list[str]:
    return PACKAGES + ([REDIS_EXPORTER] if p.jobs_enabled else [])


def installed_list(p: Platform) -> str:
    """What this deploy installed (the packages a host lacked before): removed again when monitoring is off."""
    return f"{p.state_dir}/monitoring/installed-packages"


class PrometheusSetup(FactBase):
    """Whose Prometheus this is: {"installed", "defaults" (absent|debian|ours|host), "config" (the file it reads),
    "config_state" (absent|debian|ours|host)}."""

    def command(self, defaults: str = "/etc/default/prometheus"):
        return f"d={shlex.quote(defaults)}\n" + r"""
if dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed'; then echo installed=yes; else echo installed=no; fi
if [ ! -f $d ]; then echo defaults=absent
elif cat $d | @OURS@; then echo defaults=ours
elif [ -z "$(grep -v '^[[:space:]]*#' $d | grep -v '^[[:space:]]*$' | grep -v '^ARGS=""$')" ]; then echo defaults=debian
else echo defaults=host; fi
conf=$( [ -f $d ] && sed -n 's/.*--config\.file[= ]\([^ "]*\).*/\1/p' $d | head -1 )
conf=${conf:-/etc/prometheus/prometheus.yml}
echo config=$conf
if [ ! -f "$conf" ]; then echo config_state=absent
elif head -1 "$conf" | @OURS@; then echo config_state=ours
elif [ "$(dpkg-query -W -f='${Conffiles}' prometheus 2>/dev/null | awk -v f="$conf" '$1==f {print $2}')" = "$(md5sum < "$conf" | cut -d' ' -f1)" ]; then echo config_state=debian
else echo config_state=host; fi
""".replace("@OURS@", marker.grep())

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        return {"installed": values.get("installed") == "yes", "defaults": values.get("defaults", "absent"),
                "config": values.get("config", DEBIAN_PROMETHEUS_CONFIG),
                "config_state": values.get("config_state", "absent")}


class MountPoint(FactBase):
    """The mount point of the filesystem holding `path` (its nearest existing parent, on a fresh host)."""

    def command(self, path):
        return (f"p={shlex.quote(path)}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
                "df -P \"$p\" | awk 'NR==2 {print $6}'")

    def process(self, output):
        return "".join(output).strip() or "/"


def host_owns_prometheus(setup: dict) -> bool:
    """True when the host runs a Prometheus of its own (see the module doc): extend it, never replace it."""
    return setup["defaults"] == "host" or setup["config_state"] == "host"


def watched_mounts(p: Platform, mount_of) -> list[tuple[str, str]]:
    """[(mount point, what it holds)] for the disk alert: jobs_dir's and /var/lib/docker's filesystems."""
    out: dict[str, list[str]] = {}
    paths = ([p.jobs_dir] if p.jobs_enabled else []) + ["/var/lib/docker"]
    for path in paths:
        out.setdefault(mount_of(path), []).append(path)
    return [(mount, ", ".join(held)) for mount, held in out.items()]



@deploy("Monitoring: Prometheus, Alertmanager, exporters")
def monitoring(p: Platform, env_secrets: dict):
    if not p.monitoring_enabled:
        remove_monitoring(p)  # type: ignore[call-arg, arg-type]  # pyinfra's PyinfraOperation types _sudo etc. as positional
        return
    setup = host.get_fact(PrometheusSetup)
    extend = host_owns_prometheus(setup)
    if extend:
        host.log(f"This host runs a Prometheus of its own ({setup['config']}): our scrape jobs, rules and "
                 "Alertmanager are added to its config as marked blocks; its own flags (listen address, "
                 "retention) stay as they are")
    wanted = packages(p)
    q = shlex.quote

    # our configs and command lines first: the packages' first start (their postinst) already reads them, so
    # no unit ever listens beyond loopback, not even for a moment (apt keeps a config file that exists: confold)
    lines = mc.command_lines(p, own_prometheus=not extend)
    # every small file below is checked with one command (text_file's batch), not two or three each
    batch = tuple([mc.RULES_FILE, mc.BLACKBOX_CONFIG, mc.ALERTMANAGER_CONFIG]
                  + ([mc.JOBS_SCRIPT, REDIS_EXPORTER_DROPIN] if p.jobs_enabled else [])
                  + ([] if extend else [mc.PROMETHEUS_CONFIG]) + [f"{DEFAULTS}/{package}" for package in lines])
    files.directory(name="Monitoring state folder", path=f"{p.state_dir}/monitoring", mode="755")
    rules = text_file(name="Alert and recording rules", path=mc.RULES_FILE, batch=batch,
                      content=mc.render_rules(p, [w.name for w in link.worker_hosts()]))
    probes = mc.render_blackbox(p)
    blackbox = text_file(name="blackbox_exporter probes (TLS of our vhosts, the services' /health)",
                         content=probes, path=mc.BLACKBOX_CONFIG, batch=batch)
    alertmanager = text_file(name="Alertmanager routes and receivers", content=mc.render_alertmanager(p),
                             path=mc.ALERTMANAGER_CONFIG, batch=batch)
    jobs_script, script = None, ""
    if p.jobs_enabled:
        script = mc.render_jobs_script(p)
        jobs_script = text_file(name="The job queues as metrics (Lua, run by the Redis exporter)",
                                content=script, path=mc.JOBS_SCRIPT, batch=batch)
    # the services the autostart proxy reports running (it rewrites this file; an empty list until then)
    targets = mc.targets_file(p)
    targets_present = host.get_fact(CommandSucceeds, command=f"test -f {q(targets)}")
    server.shell(name="file_sd file of the running services (the autostart proxy keeps it)",
                 commands=[f"printf '[]\\n' > {targets} && chmod 644 {targets}"], _if=lambda: not targets_present)
    mounts = watched_mounts(p, lambda path: host.get_fact(MountPoint, path=path))
    scrape_jobs = mc.render_scrape_jobs(p, mounts)
    config = None
    if not extend:
        config = text_file(name="Prometheus config (ours: no Prometheus of the host's own)", batch=batch,
                           content=mc.render_prometheus(p, scrape_jobs), path=mc.PROMETHEUS_CONFIG)
    defaults, command_lines = {}, {}
    backup = f"{p.takeover_backup_dir}/monitoring"
    foreign = host.get_fact(ForeignDefaults, paths=tuple(f"{DEFAULTS}/{package}" for package in lines))
    for package, args in lines.items():
        path = f"{DEFAULTS}/{package}"
        if path in foreign:
            server.shell(name=f"Keep the host's own {path} in {backup}",
                         commands=[f"install -d -m 700 {backup}", f"cp -a {path} {backup}/"])
        command_lines[package] = mc.render_defaults(package, args)
        defaults[package] = text_file(name=f"{package}: command line (loopback)", path=path, batch=batch,
                                      content=command_lines[package])
    redis_env = dropin = None
    exporter_dropin = ""
    if p.jobs_enabled:
        # the exporter's password: only REDIS_PASSWORD, copied from the host's secret file (root 0600)
        redis_env_current = host.get_fact(CommandSucceeds, command=(
            f"test -s {REDIS_EXPORTER_ENV} && [ \"$(grep '^REDIS_PASSWORD=' {q(p.jobs_env_file)})\" = "
            f"\"$(cat {REDIS_EXPORTER_ENV})\" ]"))
        redis_env = server.shell(
            name=f"Redis exporter's password ({REDIS_EXPORTER_ENV}, from {p.jobs_env_file})",
            commands=[f"(umask 077; grep '^REDIS_PASSWORD=' {q(p.jobs_env_file)} > {REDIS_EXPORTER_ENV}.new) "
                      f"&& mv {REDIS_EXPORTER_ENV}.new {REDIS_EXPORTER_ENV}"],
            _if=lambda: not redis_env_current)
        # the services' group: Redis's unix socket is theirs (the only local way in while worker hosts turn the
        # plain port off)
        exporter_dropin = mc.render_redis_exporter_dropin(p, REDIS_EXPORTER_ENV)
        dropin = text_file(name="Redis exporter: its password file, the socket's group, after Redis",
                           path=REDIS_EXPORTER_DROPIN, batch=batch, content=exporter_dropin)
    systemd.daemon_reload(name="systemd daemon-reload (Redis exporter drop-in changed)", _if=changed(dropin))

    # remembered before the install: only what this deploy added leaves with monitoring_enabled False
    all_installed = host.get_fact(CommandSucceeds, command=" && ".join(
        f"dpkg-query -W -f='${{Status}}' {pkg} 2>/dev/null | grep -q 'install ok installed'" for pkg in wanted))
    server.shell(
        name="Remember which monitoring packages this deploy installs",
        commands=[f"for p in {' '.join(wanted)}; do dpkg-query -W -f='${{Status}}' \"$p\" 2>/dev/null | "
                  f"grep -q 'install ok installed' || echo \"$p\"; done >> {installed_list(p)}"],
        _if=lambda: not all_installed)
    install = apt.packages(name="Install Prometheus, Alertmanager and the exporters (OS packages)",
                           packages=wanted, no_recommends=True, update=True, cache_time=24 * 3600,
                           _env={"DEBIAN_FRONTEND": "noninteractive"})

    smtp = None
    password = env_secrets.get("WHISPER_SMTP_PASSWORD")
    if password is not None:
        smtp = secret_file(name="SMTP password for the alert e-mails", path=mc.SMTP_PASSWORD_FILE, content=password,
                           staging_dir=f"{p.state_dir}/staging", mode="640", group="prometheus")
    elif p.smtp_user and not host.get_fact(CommandSucceeds, command=f"test -f {mc.SMTP_PASSWORD_FILE}"):
        host.log("smtp_user is set but WHISPER_SMTP_PASSWORD was never given: alert e-mails will fail to "
                 "authenticate until a deploy sets it")
        smtp = server.shell(name="Empty SMTP password file (none given yet)", commands=[
            f"install -m 640 -o root -g prometheus /dev/null {mc.SMTP_PASSWORD_FILE}"])
    if extend:
        config = _extend_host_config(p, setup, scrape_jobs)

    # restarts (stages/signals.py): a unit whose package, command line or own settings changed restarts (not for a
    # change of a file's header alone: beyond_header); Prometheus and Alertmanager reload for a config change alone
    restarts = {}
    for package in lines:
        triggers: list = [install, beyond_header(defaults[package], f"{DEFAULTS}/{package}", command_lines[package],
                                                 batch)]   # changed() skips None
        if package == "prometheus-blackbox-exporter":
            triggers.append(beyond_header(blackbox, mc.BLACKBOX_CONFIG, probes, batch))
        if package == REDIS_EXPORTER:
            triggers += [redis_env, beyond_header(dropin, REDIS_EXPORTER_DROPIN, exporter_dropin, batch),
                         beyond_header(jobs_script, mc.JOBS_SCRIPT, script, batch)]
        restarts[package] = restart_unit(package, changed(*triggers), "its package, command line or settings changed",
                                         enable=True)
    # a restart reads the new config already; a host's own Prometheus is never restarted, only reloaded
    reload_unit("prometheus-alertmanager", changed(alertmanager, smtp, unless=restarts["prometheus-alertmanager"]),
                "its routes or receivers changed")
    reload_unit("prometheus", changed(rules, config, unless=restarts.get("prometheus")),
                "its scrape jobs or rules changed")
    for package in wanted:
        systemd.service(name=f"{package} running and enabled", service=package, running=True, enabled=True)
    if not p.jobs_enabled:   # no Redis to read any more: our exporter of it stops (its package stays)
        server.shell(name=f"{REDIS_EXPORTER} stopped (jobs_enabled False)",
                     commands=[f"systemctl disable --now {REDIS_EXPORTER}"], _if=_running_ours(REDIS_EXPORTER))
    if p.grafana_apt_repo:
        grafana(p)


GRAFANA_KEYRING = "/usr/share/keyrings/whisper-platform-grafana.asc"
GRAFANA_SOURCE = "/etc/apt/sources.list.d/whisper-platform-grafana.list"
GRAFANA_DROPIN = "/etc/systemd/system/grafana-server.service.d/whisper-platform.conf"
GRAFANA_DATASOURCE = "/etc/grafana/provisioning/datasources/whisper-platform.yaml"
GRAFANA_PROVIDERS = "/etc/grafana/provisioning/dashboards/whisper-platform.yaml"


def grafana(p: Platform):
    """Grafana from its own apt repository (`grafana_apt_repo`, signed by `grafana_apt_key`), on loopback under
    monitor.<domain>/grafana/, with our Prometheus as a data source and the dashboards of dashboards/."""
    problem = apt_sources.key_file_problem("grafana_apt_repo", "grafana_apt_key", p.grafana_apt_key.strip())
    if problem:
        raise GroupDataError("grafana_apt_key", problem)
    source = apt_sources.signed_source("Grafana", p.grafana_apt_repo, p.grafana_apt_key.strip(), GRAFANA_KEYRING,
                                       GRAFANA_SOURCE)
    # its small files, their headers apart (stages.signals.beyond_header): one command for all of them
    written = {GRAFANA_DROPIN: mc.render_grafana_dropin(p), GRAFANA_DATASOURCE: mc.render_grafana_datasource(p),
               GRAFANA_PROVIDERS: mc.render_grafana_dashboards()}
    batch = tuple(written)
    dropin = files.put(name="Grafana: loopback, under /grafana/, read-only viewers, no calls home",
                       src=text_source(written[GRAFANA_DROPIN]), dest=GRAFANA_DROPIN, mode="644")
    provisioning = [
        beyond_header(files.put(name="Grafana: our Prometheus as a data source",
                                src=text_source(written[GRAFANA_DATASOURCE]), dest=GRAFANA_DATASOURCE, mode="644"),
                      GRAFANA_DATASOURCE, written[GRAFANA_DATASOURCE], batch),
        beyond_header(files.put(name="Grafana: the dashboards folder", src=text_source(written[GRAFANA_PROVIDERS]),
                                dest=GRAFANA_PROVIDERS, mode="644"),
                      GRAFANA_PROVIDERS, written[GRAFANA_PROVIDERS], batch),
        synced_tree("Grafana: the dashboards (dashboards/*.json)", str(REPO / "dashboards"), mc.GRAFANA_DASHBOARDS,
                    exclude=["*.md"]),
    ]
    install = apt.packages(name="Install Grafana", packages=["grafana"], no_recommends=True,
                           _env={"DEBIAN_FRONTEND": "noninteractive"})
    systemd.daemon_reload(name="systemd daemon-reload (Grafana's drop-in changed)", _if=changed(dropin))
    restart_unit("grafana-server", changed(install, beyond_header(dropin, GRAFANA_DROPIN, written[GRAFANA_DROPIN], batch),
                                           *provisioning, *source),
                 "its package, settings or dashboards changed", enable=True)
    systemd.service(name="grafana-server running and enabled", service="grafana-server", running=True, enabled=True)


class ForeignDefaults(FactBase):
    """Those of `paths` (/etc/default files) that are the host's own: present, without our marker, and saying more
    than Debian's empty ARGS (kept in the backup folder before ours replaces them)."""

    @staticmethod
    def default():
        return set()

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for f in {quoted}; do if [ -f \"$f\" ] && ! cat \"$f\" | {marker.grep()} && "
                "grep -v '^[[:space:]]*#' \"$f\" | grep -v '^[[:space:]]*$' | grep -qv '^ARGS=\"\"$'; "
                "then echo \"$f\"; fi; done")

    def process(self, output):
        return {line.strip() for line in output if line.strip()}


def _extend_host_config(p: Platform, setup: dict, scrape_jobs: str):
    """The host's own Prometheus config with our marked blocks, checked by promtool before it replaces the
    host's file."""
    path = setup["config"]
    current = host.get_fact(RawFile, path=path) or ""
    try:
        wanted = mc.extend_config(current, scrape_jobs, p.alertmanager_port)
    except mc.ConfigShapeError as exc:
        raise mc.ConfigShapeError(f"{path}: {exc}; nothing was changed on the host") from None
    if wanted == current:
        host.noop(f"{path} already holds our scrape jobs, rules and Alertmanager")
        return None
    host.log(f"Will add (or update) our marked blocks in the host's {path}; a copy stays in "
             f"{p.takeover_backup_dir}/monitoring/")
    candidate = f"{path}.whisper-platform.new"
    files.put(name=f"Candidate {candidate}", src=text_source(wanted), dest=candidate, mode="644")
    q = shlex.quote
    return server.shell(name=f"promtool check config, then our blocks into {path}", commands=[
        f"install -d -m 700 {p.takeover_backup_dir}/monitoring",
        f"cp -a {q(path)} {p.takeover_backup_dir}/monitoring/prometheus.yml.$(date +%Y%m%d-%H%M%S) || true",
        f"promtool check config {q(candidate)} >&2 || {{ rm -f {q(candidate)}; echo \"whisper-platform: the host's "
        f"Prometheus config with our blocks fails promtool check config: left unchanged\" >&2; exit 1; }}",
        f"chown --reference={q(path)} {q(candidate)} 2>/dev/null; chmod --reference={q(path)} {q(candidate)} "
        f"2>/dev/null; mv -f {q(candidate)} {q(path)}",
    ])


@deploy("Monitoring: removed (monitoring_enabled False)")
def remove_monitoring(p: Platform):
    """Our units stopped, the packages this deploy installed removed, our files and blocks gone; a Prometheus of
    the host's own keeps running without our blocks. Nothing at all on a host that never had ours."""
    ours = host.get_fact(CommandSucceeds, command=f"test -d {mc.MON_DIR}")
    if not ours:
        return
    setup = host.get_fact(PrometheusSetup)
    if host_owns_prometheus(setup):
        current = host.get_fact(RawFile, path=setup["config"]) or ""
        cleaned = mc.remove_blocks(current)
        if cleaned != current:
            put = files.put(name=f"Our blocks out of the host's {setup['config']}", src=text_source(cleaned),
                            dest=setup["config"])
            reload_unit("prometheus", changed(put), "our scrape jobs and rules left")
    for package in PACKAGES + [REDIS_EXPORTER]:
        path = f"{DEFAULTS}/{package}"
        server.shell(name=f"{package}: stopped, Debian's command line back",
                     commands=[f"systemctl disable --now {package} 2>/dev/null || true",
                               f"printf 'ARGS=\"\"\\n' > {path}"],
                     _if=_ours(path))
    installed = installed_list(p)
    server.shell(name="Remove the monitoring packages this deploy installed", commands=[
        f"if [ -s {installed} ]; then DEBIAN_FRONTEND=noninteractive apt-get remove -y $(sort -u {installed}); fi",
        f"rm -f {installed}",
    ])
    server.shell(name="Our monitoring files removed", commands=[
        f"rm -rf {mc.MON_DIR} {REDIS_EXPORTER_ENV} {REDIS_EXPORTER_DROPIN} {mc.targets_file(p)}",
        "systemctl daemon-reload",
    ])


def _running_ours(package: str):
    """An `_if=`: the unit runs with our command line."""
    running = host.get_fact(CommandSucceeds, command=f"systemctl is-active --quiet {package} && "
                                                     + marker.owned_command(f"{DEFAULTS}/{package}"))
    return lambda: running


def _ours(path: str):
    present = host.get_fact(CommandSucceeds, command=marker.owned_command(path))
    return lambda: present
