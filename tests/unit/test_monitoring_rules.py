"""The monitoring stage's text, checked by Prometheus's own tools: the alert rules against the promtool fixtures of
tests/unit/prometheus/ (`promtool test rules`), the rendered Prometheus config (`promtool check config`), the
Alertmanager config (`amtool check-config`), and the blocks that extend a host's own prometheus.yml.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages: `make test-unit` unpacks
them (sandbox/ensure-promtool.sh). Without them these tests fail, saying so: they are not skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stages import monitoring_config as mc
from stages.settings import GroupDataError, Platform, read_group_data

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "prometheus"
TOOLS = Path(os.environ.get("WHISPER_TOOLS", Path.home() / ".cache/whisper-platform/tools"))
# Debian's sample prometheus.yml (prometheus 2.42, bookworm), as a host that installed the package has it
DEBIAN_SAMPLE = (FIXTURES / "debian-prometheus.yml").read_text()


def tool(name: str) -> str:
    found = os.environ.get(name.upper()) or shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).is_file() else None)
    if not found:
        pytest.fail(f"{name} not found (PATH, ${name.upper()}, {TOOLS}): run `make promtool` "
                    "(sandbox/ensure-promtool.sh unpacks it from Debian's packages)", pytrace=False)
    return found


def run(*argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)


def platform(*groups, **over) -> Platform:
    return Platform.from_group_data(read_group_data(*groups, **over))


def test_alert_rules_pass_their_promtool_fixtures(tmp_path):
    """Every alert fires on the input that should make it fire, not before, and not on its neighbours' data,
    with the declared thresholds (stages/settings.py; the fixtures' comments say which)."""
    (tmp_path / "rules.yml").write_text(mc.render_rules(platform(), ["gpu1"]))
    shutil.copy(FIXTURES / "alerts.test.yml", tmp_path / "alerts.test.yml")
    res = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_fixture_and_a_runbook_entry():
    rules = yaml.safe_load(mc.render_rules(platform(), ["gpu1"]))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for test in yaml.safe_load((FIXTURES / "alerts.test.yml").read_text())["tests"]
              for t in test["alert_rule_test"]}
    assert alerts == tested
    docs = (HERE.parents[1] / "docs" / "monitoring.md").read_text()
    for rule in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        assert rule["labels"]["platform"] == "whisper"
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower() and f"### {rule['alert']}" in docs, rule["alert"]


@pytest.mark.parametrize("groups", [(), ("sandbox",)])
def test_thresholds_come_from_group_data(groups):
    p = platform(*groups, alert_job_age_minutes=7, alert_disk_percent=91, alert_no_worker_for="45s")
    rules = {r.get("alert"): r for g in yaml.safe_load(mc.render_rules(p, []))["groups"] for r in g["rules"]}
    assert "> 420" in rules["JobWaitingTooLong"]["expr"]
    assert "> 91" in rules["DiskAlmostFull"]["expr"]
    assert rules["JobsWithoutWorker"]["for"] == "45s"


@pytest.mark.parametrize("groups", [(), ("sandbox",), ("production",), ("brownfield",)])
def test_our_prometheus_config_passes_promtool(tmp_path, groups):
    p = platform(*groups)
    rules = tmp_path / "rules.yml"
    rules.write_text(mc.render_rules(p, ["gpu1"]))
    config = mc.render_prometheus(p, mc.render_scrape_jobs(p, [("/", "/var/lib/whisper-platform/jobs"),
                                                                ("/var/lib/docker", "/var/lib/docker")]))
    assert config.splitlines()[0].endswith(mc.MARKER + "; edit group_data, not this file.")
    (tmp_path / "prometheus.yml").write_text(config.replace(mc.RULES_FILE, str(rules)))
    res = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout


def test_scrape_targets_are_loopback_ports_never_a_vhost_or_the_proxys_routing():
    p = platform()
    jobs = yaml.safe_load(mc.render_scrape_jobs(p, [("/", "x")]))
    for job in jobs:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.startswith("127.0.0.1:"), (job["job_name"], target)
    by_name = {job["job_name"]: job for job in jobs}
    # the services only from the proxy's file, and only their own ports (never another tenant of config.json)
    services = by_name["whisper_services"]
    assert services["file_sd_configs"] == [{"files": [mc.targets_file(p)]}]
    assert services["relabel_configs"][0] == {"source_labels": ["__address__"], "regex": r"127\.0\.0\.1:(8001|8002)",
                                              "action": "keep"}
    # the TLS probe goes to nginx on loopback with each vhost as SNI
    tls = by_name["whisper_tls"]["static_configs"]
    assert {s["labels"]["vhost"] for s in tls} == {"whisper.srv759970.hstgr.cloud", "whisperx.srv759970.hstgr.cloud",
                                                   "monitor.srv759970.hstgr.cloud"}
    blackbox = yaml.safe_load(mc.render_blackbox(p))["modules"]
    assert blackbox["tls_whisper.srv759970.hstgr.cloud"]["tcp"]["tls_config"] == {
        "server_name": "whisper.srv759970.hstgr.cloud", "insecure_skip_verify": False}
    assert platform("sandbox").tls_mode == "selfsigned"
    assert yaml.safe_load(mc.render_blackbox(platform("sandbox")))["modules"]["tls_whisper.sandbox.test"]["tcp"][
        "tls_config"]["insecure_skip_verify"] is True


def test_a_hosts_own_proxy_is_not_scraped():
    """autostart_install False keeps the runbook's Node proxy, which has no /metrics: no job for it (no false
    AutostartProxyDown), and no file of running services either."""
    names = [j["job_name"] for j in yaml.safe_load(mc.render_scrape_jobs(platform(autostart_install=False), [("/", "x")]))]
    assert "whisper_autostart" not in names and "whisper_node" in names
    assert "whisper_autostart" in [j["job_name"] for j in yaml.safe_load(mc.render_scrape_jobs(platform(), [("/", "x")]))]


def test_every_listener_is_on_loopback_and_retention_is_bounded():
    lines = mc.command_lines(platform(), own_prometheus=True)
    for package, args in lines.items():
        listen = [a for a in args.split() if "listen-address=" in a]
        assert listen and all("=127.0.0.1:" in a or a.endswith("listen-address=") for a in listen), package
    assert "--cluster.listen-address=" in lines["prometheus-alertmanager"].split()   # no gossip port
    assert "--storage.tsdb.retention.time=15d" in lines["prometheus"]
    assert "--storage.tsdb.retention.size=512MB" in lines["prometheus"]
    # a Prometheus of the host's own keeps its command line
    assert "prometheus" not in mc.command_lines(platform(), own_prometheus=False)
    assert "prometheus-redis-exporter" not in mc.command_lines(platform(jobs_enabled=False), own_prometheus=True)


@pytest.mark.parametrize("over, receivers", [
    ({}, []),
    ({"alert_webhook_url": "https://hooks.example.org/alerts"}, ["webhook_configs"]),
    ({"alert_email_to": "ops@example.org, oncall@example.org", "smtp_smarthost": "mail.example.org:587",
      "smtp_user": "alerts"}, ["email_configs"]),
])
def test_alertmanager_config_passes_amtool(tmp_path, over, receivers):
    text = mc.render_alertmanager(platform(**over))
    (tmp_path / "am.yml").write_text(text.replace(mc.SMTP_PASSWORD_FILE, str(tmp_path / "pw")))
    (tmp_path / "pw").write_text("x")
    res = run(tool("amtool"), "check-config", str(tmp_path / "am.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml.safe_load(text)
    whisper = next(r for r in config["receivers"] if r["name"] == "whisper")
    assert sorted(set(whisper) - {"name"}) == receivers
    assert config["route"]["routes"][0]["matchers"] == ['platform="whisper"']
    if "smtp_user" in over:
        assert config["global"]["smtp_auth_password_file"] == mc.SMTP_PASSWORD_FILE
        assert [c["to"] for c in whisper["email_configs"]] == ["ops@example.org", "oncall@example.org"]
    assert "password:" not in text   # the SMTP password only ever sits in its own root:prometheus file


@pytest.mark.parametrize("over, key, message", [
    ({"monitor_subdomain": "whisper"}, "monitor_subdomain", "also a service's subdomain"),
    ({"prometheus_port": 8890}, "prometheus_port", "8890 is also autostart_port"),
    ({"alertmanager_port": 9090}, "alertmanager_port", "9090 is also prometheus_port"),
    ({"alert_email_to": "ops@example.org"}, "smtp_smarthost", "name the mail relay"),
    ({"alert_email_to": "not-an-address"}, "alert_email_to", "not an e-mail address"),
    ({"alert_5xx_ratio": 5}, "alert_5xx_ratio", "0.05 = 5 %"),
    ({"alert_disk_percent": 100}, "alert_disk_percent", "between 1 and 99"),
    ({"alert_no_worker_for": "2 minutes"}, "alert_no_worker_for", "a duration"),
    ({"prometheus_retention_size": "1G"}, "prometheus_retention_size", "512MB"),
    ({"alert_webhook_url": "ftp://x"}, "alert_webhook_url", "not an http"),
])
def test_bad_monitoring_knobs_name_their_key(over, key, message):
    with pytest.raises(GroupDataError, match=message) as err:
        platform(**over)
    assert err.value.key == key


def test_monitoring_off_frees_its_ports():
    assert platform(monitoring_enabled=False, prometheus_port=8890).prometheus_port == 8890


# --- a Prometheus the host already runs --------------------------------------------------------------
JOBS = "- job_name: whisper_x\n  static_configs:\n    - targets: [\"127.0.0.1:1\"]\n"


def test_extending_keeps_every_byte_of_the_host_config_and_is_idempotent():
    extended = mc.extend_config(DEBIAN_SAMPLE, JOBS, 9093)
    assert mc.extend_config(extended, JOBS, 9093) == extended
    assert mc.remove_blocks(extended) == DEBIAN_SAMPLE
    config = yaml.safe_load(extended)
    assert config["rule_files"] == [mc.RULES_FILE]
    assert [j["job_name"] for j in config["scrape_configs"]] == ["whisper_x", "prometheus", "node"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]
    assert config["alerting"]["alertmanagers"][1] == {"static_configs": [{"targets": ["localhost:9093"]}]}
    assert config["global"]["external_labels"] == {"monitor": "example"}
    # changed jobs replace the old block, never pile up
    again = mc.extend_config(extended, JOBS.replace("whisper_x", "whisper_y"), 9093)
    assert [j["job_name"] for j in yaml.safe_load(again)["scrape_configs"]] == ["whisper_y", "prometheus", "node"]


@pytest.mark.parametrize("host_config, jobs", [
    # items at the key's own indentation, no rule files, no alerting at all
    ("global:\n  scrape_interval: 1m\nscrape_configs:\n- job_name: theirs\n  static_configs:\n  - targets: [a:1]\n",
     ["whisper_x", "theirs"]),
    # empty lists written inline, and no trailing newline
    ("rule_files: []\nscrape_configs: []\nalerting:\n  alertmanagers: []", ["whisper_x"]),
    # nothing but a comment
    ("# the host's own\n", ["whisper_x"]),
])
def test_extending_other_shapes(host_config, jobs):
    extended = mc.extend_config(host_config, JOBS, 9093)
    config = yaml.safe_load(extended)
    assert [j["job_name"] for j in config["scrape_configs"]] == jobs
    assert config["rule_files"] == [mc.RULES_FILE]
    assert config["alerting"]["alertmanagers"][0]["path_prefix"] == "/alertmanager"
    assert mc.extend_config(extended, JOBS, 9093) == extended


def test_an_inline_list_is_refused_with_a_reason():
    with pytest.raises(mc.ConfigShapeError, match="written inline"):
        mc.extend_config("scrape_configs: [{job_name: a, static_configs: [{targets: ['a:1']}]}]\n", JOBS, 9093)


def test_the_extended_debian_config_passes_promtool(tmp_path):
    p = platform()
    rules = tmp_path / "rules.yml"
    rules.write_text(mc.render_rules(p, []))
    extended = mc.extend_config(DEBIAN_SAMPLE, mc.render_scrape_jobs(p, [("/", "x")]), p.alertmanager_port)
    (tmp_path / "prometheus.yml").write_text(extended.replace(mc.RULES_FILE, str(rules)))
    res = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


# --- Grafana ---------------------------------------------------------------------------------------
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "time", "without", "max", "on", "and", "or",
                "unless", "le", "job", "instance", "route", "task", "host", "code", "service", "container", "vhost",
                "alertstate", "platform", "whisper_holds", "mountpoint"}
KNOWN_PREFIXES = ("docker_autostart_", "stt_", "node_", "redis_", "probe_", "ALERTS")


def test_dashboards_read_only_series_that_exist():
    """Every panel reads our Prometheus (the provisioned data source) and series that our scrape jobs or recording
    rules produce: a renamed metric breaks this test, not the dashboard in front of the operator."""
    recorded = {r["record"] for g in yaml.safe_load(mc.render_rules(platform(), ["x"]))["groups"]
                for r in g["rules"] if "record" in r}
    for path in (HERE.parents[1] / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert len(panels) >= 8, path
        for panel in panels:
            assert panel["datasource"]["uid"] == mc.GRAFANA_DATASOURCE_UID, panel["title"]
            for target in panel["targets"]:
                expr = re.sub(r'"[^"]*"|\[[0-9a-z]+\]', '""', target["expr"])   # no strings, no ranges
                for name in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)) - PROMQL_WORDS:
                    assert name in recorded or name.startswith(KNOWN_PREFIXES), (path.name, panel["title"], name)
        titles = " ".join(p["title"].lower() for p in panels)
        for topic in ("requests", "latency", "queue", "real time", "memory", "disk", "certificate", "alerts"):
            assert topic in titles, topic


def test_grafana_is_provisioned_on_loopback_under_the_monitor_vhost():
    p = platform(grafana_apt_repo="https://packages.example/deb stable main")
    dropin = mc.render_grafana_dropin(p)
    assert "Environment=GF_SERVER_HTTP_ADDR=127.0.0.1" in dropin
    assert "Environment=GF_SERVER_ROOT_URL=https://monitor.srv759970.hstgr.cloud/grafana/" in dropin
    assert "Environment=GF_AUTH_ANONYMOUS_ORG_ROLE=Viewer" in dropin
    source = yaml.safe_load(mc.render_grafana_datasource(p))["datasources"][0]
    assert source["uid"] == mc.GRAFANA_DATASOURCE_UID and source["url"] == "http://127.0.0.1:9090/prometheus"
    assert yaml.safe_load(mc.render_grafana_dashboards())["providers"][0]["options"]["path"] == mc.GRAFANA_DASHBOARDS
