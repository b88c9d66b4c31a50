"""The monitoring stage alone, applied for real over SSH to a fresh systemd host in Docker (the sandbox host image, a
container of its own) that already runs a Prometheus of its own: the deploy extends that Prometheus (our blocks in
its config, checked by promtool, its command line untouched), a second run changes nothing, and
monitoring_enabled False takes everything of ours away again while the host's Prometheus keeps running as it was.

(The whole platform with our own Prometheus is the e2e tier's: tests/e2e/test_monitoring.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.throwaway_host import sh, systemd_host

from stages import monitoring_config as mc

REPO = Path(__file__).resolve().parents[3]
PYINFRA = Path(sys.executable).with_name("pyinfra")
pytestmark = [pytest.mark.docker, pytest.mark.slow]

# the host's own Prometheus, as an operator set it up before our deploy
HOST_CONFIG = """# our company's Prometheus
global:
  scrape_interval: 1m
  external_labels: {site: paris}

scrape_configs:
- job_name: theirs
  static_configs:
  - targets: ['127.0.0.1:9090']
"""
HOST_ARGS = ('ARGS="--config.file=/etc/prometheus/company.yml --web.listen-address=127.0.0.1:9090 '
             '--storage.tsdb.retention.time=90d"\n')

DEPLOY = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pyinfra import host
from pyinfra.operations import apt, files, server, systemd
from stages import monitoring, web
from stages.settings import Platform

p = Platform.from_group_data(host.data)
# what the stages before it give every host: the services' group, nginx with our stub_status
server.group(name="Service user group", group=p.app_user, gid=p.app_uid, system=True)
apt.packages(name="nginx", packages=["nginx-light"], update=True, cache_time=24 * 3600, no_recommends=True,
             _env={{"DEBIAN_FRONTEND": "noninteractive"}})
status = files.put(name="stub_status", src=__import__("io").StringIO(web.render_status(p)),
                   dest="/etc/nginx/conf.d/whisper-platform-status.conf")
systemd.service(name="nginx", service="nginx", running=True, enabled=True)
server.shell(name="nginx reload", commands=["systemctl reload nginx"], _if=status.did_change)
monitoring.monitoring(p, {{}})
"""



@pytest.fixture(scope="module")
def prom_host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring-host")
    with systemd_host(tmp, "monitoring-stage") as name:
        # the host's own Prometheus, running before we come
        host = {"name": name, "tmp": tmp}
        on_host(host, "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                      "apt-get install -y -qq --no-install-recommends prometheus >/dev/null")
        on_host(host, f"cat > /etc/prometheus/company.yml <<'EOF'\n{HOST_CONFIG}EOF\n"
                      f"cat > /etc/default/prometheus <<'EOF'\n{HOST_ARGS}EOF\nsystemctl restart prometheus")
        (tmp / "deploy.py").write_text(DEPLOY)
        yield host


def deploy(host, *extra):
    # jobs off: this host has no Redis (the Redis exporter is the e2e tier's)
    args = [str(PYINFRA), str(host["tmp"] / "inventory.py"), str(host["tmp"] / "deploy.py"), "-y",
            "--data", "jobs_enabled=False", *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    return r


def on_host(host, command):
    return sh("docker", "exec", host["name"], "sh", "-c", command).stdout


def prometheus(host, path):
    return json.loads(on_host(host, f"python3 -c 'import urllib.request; print(urllib.request.urlopen("
                                    f"\"http://127.0.0.1:9090{path}\").read().decode())'"))


def test_the_hosts_prometheus_is_extended_then_left_as_it_was(prom_host):
    first = deploy(prom_host)
    assert "runs a Prometheus of its own (/etc/prometheus/company.yml)" in first.stdout + first.stderr
    # its command line and every byte of its config stay; our blocks come in, and promtool accepted them
    assert on_host(prom_host, "cat /etc/default/prometheus") == HOST_ARGS
    extended = on_host(prom_host, "cat /etc/prometheus/company.yml")
    assert mc.BEGIN in extended and mc.remove_blocks(extended) == HOST_CONFIG
    assert on_host(prom_host, "systemctl is-active prometheus").strip() == "active"
    config = prometheus(prom_host, "/api/v1/status/config")["data"]["yaml"]   # what it runs with now (reloaded)
    assert "job_name: theirs" in config and "job_name: whisper_node" in config and mc.RULES_FILE in config
    groups = [g["name"] for g in prometheus(prom_host, "/api/v1/rules")["data"]["groups"]]
    assert "whisper-platform" in groups
    # our exporters on loopback; the host's Prometheus keeps its own flags
    listeners = on_host(prom_host, "ss -ltnH")
    assert all(line.split()[3].startswith(("127.0.0.1:", "[::1]:")) for line in listeners.splitlines()
               if line.split()[3].rsplit(":", 1)[1] in ("9090", "9093", "9100", "9113", "9115")), listeners

    second = json.loads(deploy(prom_host, "--json").stdout)["results"]
    changed_ops = [op["name"] for op in second["ops"] if op["success"]] if "ops" in second else second
    assert second["totals"]["success"] == 0, changed_ops

    deploy(prom_host, "--data", "monitoring_enabled=False")
    assert on_host(prom_host, "cat /etc/prometheus/company.yml") == HOST_CONFIG
    assert on_host(prom_host, "cat /etc/default/prometheus") == HOST_ARGS
    assert on_host(prom_host, "systemctl is-active prometheus").strip() == "active"
    assert "whisper_node" not in prometheus(prom_host, "/api/v1/status/config")["data"]["yaml"]
    # what this deploy installed is gone; the host's own Prometheus package stays
    installed = on_host(prom_host, "dpkg-query -W -f '${Package} ${Status}\\n' 'prometheus*' 2>/dev/null || true")
    assert "prometheus install ok installed" in installed
    assert "prometheus-alertmanager install ok installed" not in installed
    assert on_host(prom_host, f"test -e {mc.MON_DIR} && echo present || echo gone").strip() == "gone"
