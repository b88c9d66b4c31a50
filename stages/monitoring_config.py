"""What the monitoring stage writes, as text: Prometheus's scrape jobs and rules, Alertmanager's and
blackbox_exporter's configs, the exporters' command lines, and the marked blocks that extend a Prometheus
config the host already had. Pure functions of the Platform (and a few host facts), so that the unit tier
checks them with promtool and amtool without a host (tests/unit/test_monitoring_*.py)."""

from __future__ import annotations

import re

from stages.marker import MARKER
from stages.ops import render_template
from stages.redis import socket_path as redis_socket_path
from stages.settings import REPO, Platform

TEMPLATES = REPO / "templates" / "prometheus"
MON_DIR = "/etc/prometheus/whisper-platform"   # every file of ours the monitoring units read
RULES_FILE = f"{MON_DIR}/rules.yml"
PROMETHEUS_CONFIG = f"{MON_DIR}/prometheus.yml"   # ours, where the host had no Prometheus of its own
ALERTMANAGER_CONFIG = f"{MON_DIR}/alertmanager.yml"
BLACKBOX_CONFIG = f"{MON_DIR}/blackbox.yml"
JOBS_SCRIPT = f"{MON_DIR}/jobs.lua"
SMTP_PASSWORD_FILE = f"{MON_DIR}/smtp-password"
# the marker of the blocks we add to a host's own prometheus.yml
BEGIN = "# BEGIN whisper-platform (managed by pyinfra: stages/monitoring.py)"
END = "# END whisper-platform"

# node_exporter's defaults (1.5) keep overlay out, which is the root filesystem of a host in a container; ours
# keep it and drop Docker's own mounts instead
NODE_FS_TYPES_EXCLUDE = ("^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
                         "iso9660|mqueue|nsfs|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|"
                         "tracefs|tmpfs|ramfs|nfsd)$")
NODE_MOUNTS_EXCLUDE = "^/(dev|proc|run|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"


def render(name: str, **values) -> str:
    return render_template(TEMPLATES / name, filters={"regex_escape": re.escape}, **values)


def targets_file(p: Platform) -> str:
    """The file_sd file the autostart proxy rewrites with the services that run (--targets-file)."""
    return f"{p.state_dir}/monitoring/services.json"


def vhosts(p: Platform) -> list[str]:
    """Every vhost the TLS probe watches: the services' and the monitoring page's."""
    return [svc.vhost for svc in p.services] + [p.monitor_vhost]


def _seconds(duration: str) -> int:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return int(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration)))


def scrape_timeout(p: Platform) -> str:
    """Prometheus refuses a scrape timeout above the interval: 10 s, or the interval when shorter."""
    return f"{min(10, max(1, _seconds(p.scrape_interval)))}s"


def render_scrape_jobs(p: Platform, watched_mounts: list[tuple[str, str]]) -> str:
    """Our scrape_configs items (a YAML list at indentation 0). `watched_mounts`: [(mount point, what it
    holds)], the filesystems the disk alert watches (a host fact: `df` of jobs_dir and /var/lib/docker)."""
    return render(
        "scrape-jobs.yml.j2",
        autostart_address=f"{'127.0.0.1' if p.autostart_listen_host in ('0.0.0.0', '::', '[::]') else p.autostart_listen_host}:{p.autostart_port}",
        targets_file=targets_file(p), service_ports=[str(svc.port) for svc in p.services],
        blackbox_port=p.blackbox_exporter_port, vhosts=vhosts(p), https_port=p.https_listen_port,
        node_port=p.node_exporter_port, watched_mounts=watched_mounts, jobs_enabled=p.jobs_enabled,
        redis_exporter_port=p.redis_exporter_port, nginx_exporter_port=p.nginx_exporter_port,
        alertmanager_port=p.alertmanager_port, autostart_ours=p.autostart_install,
    )


def render_prometheus(p: Platform, scrape_jobs: str) -> str:
    """Our whole prometheus.yml, for a host without a Prometheus of its own."""
    return render("prometheus.yml.j2", monitor_vhost=p.monitor_vhost, scrape_interval=p.scrape_interval,
                  scrape_timeout=scrape_timeout(p), evaluation_interval=p.evaluation_interval,
                  alertmanager_port=p.alertmanager_port, rules_file=RULES_FILE, prometheus_port=p.prometheus_port,
                  scrape_jobs=scrape_jobs.rstrip("\n"))


def render_rules(p: Platform, worker_hosts: list[str]) -> str:
    return render(
        "rules.yml.j2", vhosts_regex="|".join(re.escape(svc.vhost) for svc in p.services),
        worker_hosts=worker_hosts, alert_degraded_for=p.alert_degraded_for, alert_5xx_ratio=p.alert_5xx_ratio,
        alert_5xx_for=p.alert_5xx_for, alert_job_age_minutes=p.alert_job_age_minutes,
        alert_no_worker_for=p.alert_no_worker_for, alert_redis_for=p.alert_redis_for,
        alert_disk_percent=p.alert_disk_percent, alert_cert_days=p.alert_cert_days,
        alert_memory_ratio=p.alert_memory_ratio, alert_memory_for=p.alert_memory_for,
        alert_webhook_failures=p.alert_webhook_failures, alert_worker_host_for=p.alert_worker_host_for,
    )


def email_to(p: Platform) -> list[str]:
    return [a.strip() for a in p.alert_email_to.split(",") if a.strip()]


def render_alertmanager(p: Platform) -> str:
    return render(
        "alertmanager.yml.j2", email_to=email_to(p), email_from=p.alert_email_from or f"alertmanager@{p.domain}",
        smtp_smarthost=p.smtp_smarthost, smtp_require_tls=str(p.smtp_require_tls), smtp_user=p.smtp_user,
        smtp_password_file=SMTP_PASSWORD_FILE, webhook_url=p.alert_webhook_url, group_wait=p.alert_group_wait,
        group_interval=p.alert_group_interval, repeat_interval=p.alert_repeat_interval,
    )


def render_blackbox(p: Platform) -> str:
    # a self-signed certificate is trusted by nobody: its expiry is still worth watching
    return render("blackbox.yml.j2", vhosts=vhosts(p), insecure=str(p.tls_mode == "selfsigned"))


# a worker-host slot that has not asked the front for work this long is gone (stt_common/jobs/link.py's SEEN_TTL_S)
LINK_SEEN_TTL_S = 90


def render_jobs_script(p: Platform) -> str:
    return render("jobs.lua.j2", services=[svc.key for svc in p.services], seen_ttl=LINK_SEEN_TTL_S)


def command_lines(p: Platform, own_prometheus: bool) -> dict[str, str]:
    """{Debian package: its ARGS} for the units whose /etc/default file we write: every listener on loopback."""
    base = f"https://{p.monitor_vhost}"
    args = {
        "prometheus-alertmanager": [
            f"--config.file={ALERTMANAGER_CONFIG}", f"--web.listen-address=127.0.0.1:{p.alertmanager_port}",
            f"--web.external-url={base}/alertmanager/",
            "--cluster.listen-address=",   # one Alertmanager: no gossip port at all
        ],
        "prometheus-node-exporter": [
            f"--web.listen-address=127.0.0.1:{p.node_exporter_port}",
            f"--collector.filesystem.fs-types-exclude={NODE_FS_TYPES_EXCLUDE}",
            f"--collector.filesystem.mount-points-exclude={NODE_MOUNTS_EXCLUDE}",
        ],
        "prometheus-blackbox-exporter": [
            f"--config.file={BLACKBOX_CONFIG}", f"--web.listen-address=127.0.0.1:{p.blackbox_exporter_port}",
        ],
        "prometheus-nginx-exporter": [
            f"--nginx.scrape-uri=http://127.0.0.1:{p.nginx_status_port}/stub_status",
            f"--web.listen-address=127.0.0.1:{p.nginx_exporter_port}",
        ],
    }
    if p.jobs_enabled:
        args["prometheus-redis-exporter"] = [
            f"--redis.addr=unix://{redis_socket_path(p)}", f"--web.listen-address=127.0.0.1:{p.redis_exporter_port}",
            f"--script={JOBS_SCRIPT}",
        ]
    if own_prometheus:
        args["prometheus"] = [
            f"--config.file={PROMETHEUS_CONFIG}", f"--web.listen-address=127.0.0.1:{p.prometheus_port}",
            f"--web.external-url={base}/prometheus/",
            f"--storage.tsdb.retention.time={p.prometheus_retention_time}",
            f"--storage.tsdb.retention.size={p.prometheus_retention_size}",
        ]
    return {pkg: " ".join(a) for pkg, a in args.items()}


def render_defaults(package: str, args: str) -> str:
    return (f"# {package}'s command line: {MARKER}; edit group_data, not this file\n"
            f"# (stages/monitoring.py). Every listener is on 127.0.0.1.\n"
            f'ARGS="{args}"\n')


def render_redis_exporter_dropin(p: Platform, env_file: str) -> str:
    """The Redis exporter's unit drop-in: its password file, the socket's group (the services'), after Redis."""
    return (f"# The Redis exporter's drop-in: {MARKER} (stages/monitoring.py)\n[Unit]\n"
            "After=redis-server.service\n[Service]\n"
            f"EnvironmentFile={env_file}\nSupplementaryGroups={p.app_user}\n")


# --- a Prometheus the host already runs: our blocks in its config ----------------------------------
class ConfigShapeError(ValueError):
    """The host's prometheus.yml is not in a shape our blocks can be added to; the message says why."""


def _strip_blocks(lines: list[str]) -> list[str]:
    out, inside = [], False
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
            continue
        if inside:
            if line.strip() == END:
                inside = False
            continue
        out.append(line)
    if inside:
        raise ConfigShapeError(f"a block of ours has no end line ({END!r}): fix the file by hand")
    return out


def remove_blocks(text: str) -> str:
    """The host's config without anything we added."""
    return "".join(_strip_blocks(text.splitlines(keepends=True)))


def _top_key(lines: list[str], key: str) -> int | None:
    for i, line in enumerate(lines):
        if re.match(rf"{key}\s*:", line):
            return i
    return None


def _item_indent(lines: list[str], start: int, default: str = "  ") -> str:
    """The indentation of the list items under the key at `start` (`default` when it has none)."""
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"(\s*)- ", line) or re.match(r"(\s*)-$", line.rstrip("\n"))
        if m:
            return m.group(1)
        break
    return default


def _block(items: str, indent: str) -> list[str]:
    return [f"{indent}{BEGIN}\n"] + _indented(items.rstrip("\n") + "\n", indent).splitlines(keepends=True) \
        + [f"{indent}{END}\n"]


def _indented(text: str, indent: str) -> str:
    return "".join(indent + line if line.strip() else line for line in text.splitlines(keepends=True))


def _insert(lines: list[str], key: str, items: str) -> list[str]:
    at = _top_key(lines, key)
    if at is None:   # the key itself goes inside our block: removing the block leaves the file as it was
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return lines + _block(f"{key}:\n" + _indented(items, "  "), "")
    value = lines[at].split(":", 1)[1].split("#", 1)[0].strip()
    if value in ("[]", "null", "~"):
        lines[at] = f"{key}:\n"
    elif value:
        raise ConfigShapeError(f"its {key} is written inline ({value[:40]}...): write it as a block list "
                               f"(one '- ' item per line) so that ours can be added")
    return lines[:at + 1] + _block(items, _item_indent(lines, at)) + lines[at + 1:]


def extend_config(text: str, scrape_jobs: str, alertmanager_port: int) -> str:
    """The host's prometheus.yml with our rule file, scrape jobs and Alertmanager added as marked blocks (every
    other byte kept); run again, it replaces the blocks it added before. Raises ConfigShapeError for a file
    whose lists are written inline."""
    lines = _strip_blocks(text.splitlines(keepends=True))
    lines = _insert(lines, "rule_files", f"- {RULES_FILE}\n")
    lines = _insert(lines, "scrape_configs", scrape_jobs)
    alerting = _top_key(lines, "alerting")
    ours = ("- path_prefix: /alertmanager\n  static_configs:\n"
            f"    - targets: [\"127.0.0.1:{alertmanager_port}\"]\n")
    if alerting is None:
        lines = _insert(lines, "alerting", "alertmanagers:\n" + _indented(ours, "  "))
    else:
        managers = next((i for i in range(alerting + 1, len(lines))
                         if re.match(r"\s+alertmanagers\s*:", lines[i])), None)
        if managers is None:
            raise ConfigShapeError("its alerting section has no alertmanagers list to add ours to")
        lead = re.match(r"(\s*)", lines[managers])
        assert lead is not None   # (\s*) matches any string
        indent = lead.group(1)
        value = lines[managers].split(":", 1)[1].split("#", 1)[0].strip()
        if value in ("[]", "null", "~"):
            lines[managers] = f"{indent}alertmanagers:\n"
        elif value:
            raise ConfigShapeError("its alertmanagers list is written inline: write it as a block list")
        item = _item_indent(lines, managers, default=indent + "  ")
        if len(item) < len(indent):
            item = indent + "  "
        lines = lines[:managers + 1] + _block(ours, item) + lines[managers + 1:]
    return "".join(lines)


# --- Grafana, where grafana_apt_repo is set -------------------------------------------------------
GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards/whisper-platform"
GRAFANA_DATASOURCE_UID = "whisper-prometheus"   # what dashboards/*.json name as their data source


def render_grafana_datasource(p: Platform) -> str:
    return (f"# The monitoring stage's Prometheus for Grafana: {MARKER}\n"
            "apiVersion: 1\ndatasources:\n"
            f"  - name: whisper-platform Prometheus\n    uid: {GRAFANA_DATASOURCE_UID}\n    type: prometheus\n"
            f"    access: proxy\n    url: http://127.0.0.1:{p.prometheus_port}/prometheus\n    isDefault: false\n"
            "    editable: false\n")


def render_grafana_dashboards() -> str:
    return (f"# The dashboards of the repository's dashboards/ folder: {MARKER}\n"
            "apiVersion: 1\nproviders:\n  - name: whisper-platform\n    folder: whisper-platform\n"
            "    type: file\n    disableDeletion: true\n    allowUiUpdates: false\n"
            f"    options:\n      path: {GRAFANA_DASHBOARDS}\n")


def render_grafana_dropin(p: Platform) -> str:
    """grafana-server's settings, as environment (its grafana.ini stays the package's): loopback, under
    /grafana/ of the monitor vhost, read-only for whoever passed nginx's basic auth, no calls home."""
    env = {
        "GF_SERVER_HTTP_ADDR": "127.0.0.1", "GF_SERVER_HTTP_PORT": str(p.grafana_port),
        "GF_SERVER_ROOT_URL": f"https://{p.monitor_vhost}/grafana/", "GF_SERVER_SERVE_FROM_SUB_PATH": "true",
        "GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_AUTH_DISABLE_LOGIN_FORM": "true", "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false", "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        "GF_NEWS_NEWS_FEED_ENABLED": "false",
    }
    return (f"# Grafana's settings: {MARKER} (stages/monitoring.py)\n[Service]\n"
            + "".join(f"Environment={k}={v}\n" for k, v in env.items()))
