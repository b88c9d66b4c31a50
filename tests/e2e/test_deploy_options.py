"""Deploy options that change what the deploy does, each converged and checked on the sandbox host
over real SSH (the fresh host of conftest's `deployed`, left as the default deploy makes it).

autostart_install=False: the host keeps its own autostart proxy. On the fresh host that proxy is a
hand-made unit running a copy of the proxy's code from its own folder (as srv759970 runs its Node
server.js): the deploy registers our services in its config.json, restarts it once because that
config changed, leaves its unit and code alone, and a second run changes nothing. On a host with no
proxy at all, the option stops the deploy before anything changes. The brownfield tier covers the
same option against the runbook's real Node proxy (tests/e2e/test_brownfield.py).

Other options and where their scenario lives: tls_mode=letsencrypt with existing certificates and a
takeover: test_brownfield.py; tls_mode=selfsigned, seed_images, model_uploads, build_wheelhouse,
build_ca_bundle: every sandbox deploy (group_data/sandbox.py); jobs_enabled=True: test_jobs.py,
False: below; service_overrides_extra: test_platform.py; services[...].enabled=False on a host that
runs the service (it is retired, then comes back): below.
"""

from __future__ import annotations

import json
import time

import pytest

from .conftest import FOREIGN_ENTRY, curl, host_snapshot, pyinfra, ssh

pytestmark = pytest.mark.sandbox

UNIT = "/etc/systemd/system/docker-autostart.service"
OWN = "/opt/own-autostart"
STARTS = "/var/lib/own-autostart/starts"
OWN_UNIT = f"""# the host's own proxy, made by hand (no whisper-platform marker)
[Unit]
Description=the host's own on-demand proxy
After=docker.service

[Service]
Environment=PYTHONPATH={OWN}
ExecStartPre=/bin/sh -c 'date +%%s%%N >> {STARTS}'
ExecStart=/usr/bin/python3 -m docker_autostart --config /opt/docker-autostart/config.json --listen 127.0.0.1:8890
ExecReload=/bin/kill -HUP $MAINPID

[Install]
WantedBy=multi-user.target
"""
OPTION = ["--data", "autostart_install=False"]


def starts() -> int:
    return len(ssh(f"cat {STARTS} 2>/dev/null || true").stdout.split())


def entries() -> dict:
    """Our entries in the proxy's config.json (the host's other services have theirs beside them)."""
    services = json.loads(ssh("cat /opt/docker-autostart/config.json").stdout)["services"]
    return {vhost: entry for vhost, entry in services.items() if vhost.startswith(("whisper.", "whisperx."))}


@pytest.fixture(scope="module")
def own_proxy(deployed):
    """The host's own proxy in place of ours; afterwards the default deploy puts ours back."""
    ssh(f"systemctl stop docker-autostart && rm -rf {OWN} && mkdir -p {OWN} /var/lib/own-autostart "
        f"&& cp -a /opt/whisper-platform/autostart/docker_autostart {OWN}/ && rm -f {STARTS} {UNIT} "
        "&& systemctl daemon-reload")
    yield
    pyinfra("-y")   # ours replaces the hand-made unit (kept in the takeover backup folder)
    assert "/opt/whisper-platform/autostart" in ssh("systemctl show -p Environment docker-autostart").stdout


def test_autostart_install_false_without_a_proxy_stops_before_any_change(own_proxy):
    before = host_snapshot()
    run = pyinfra("-y", *OPTION, check=False)
    assert run.returncode != 0
    assert "group_data: autostart_install: False keeps the host's own proxy, but this host has no docker-autostart unit" \
        in run.output
    assert host_snapshot() == before


def test_autostart_install_false_keeps_the_hosts_proxy_and_converges(own_proxy, deployed):
    ssh(f"cat > {UNIT} <<'EOF'\n{OWN_UNIT}EOF\nsystemctl daemon-reload && systemctl enable --now docker-autostart")
    unit_before = ssh(f"sha256sum {UNIT}").stdout
    code_before = ssh(f"find {OWN} -type f -exec sha256sum {{}} + | sort").stdout
    assert starts() == 1
    # a changed setting that only the proxy's config carries: our two entries change, nothing else does
    pyinfra("-y", *OPTION, "--data", "autostart_idle_timeout=77")
    assert {vhost: entry["idleTimeout"] for vhost, entry in entries().items()} == \
        {"whisper.sandbox.test": 77, "whisperx.sandbox.test": 77}
    assert FOREIGN_ENTRY in ssh("cat /opt/docker-autostart/config.json").stdout   # the other site's, byte for byte
    assert ssh(f"sha256sum {UNIT}").stdout == unit_before
    assert ssh(f"find {OWN} -type f -exec sha256sum {{}} + | sort").stdout == code_before
    assert starts() == 2   # restarted once, because its config changed
    assert ssh("systemctl is-active docker-autostart").stdout.strip() == "active"
    assert OWN in ssh("systemctl show -p Environment docker-autostart").stdout
    # the request path works through the host's proxy: nginx -> its proxy -> our service (started on demand)
    key = deployed["secrets"]["WHISPER_API_KEY"]
    answer = curl("whisper.sandbox.test", "/v1/models", "-H", f"Authorization: Bearer {key}")
    assert answer["status"] == 200, answer["body"][:300]
    # the same run again: nothing to do, no restart
    again = pyinfra("-y", "--json", *OPTION, "--data", "autostart_idle_timeout=77")
    assert again.changed() == 0, again.stdout[-3000:]
    assert starts() == 2


FASTER = "whisper.sandbox.test"
COMPOSE = "/opt/whisper-faster/docker-compose.yml"


def running() -> set[str]:
    return set(ssh("docker ps --format '{{.Names}}'").stdout.split())


@pytest.fixture(scope="module")
def jobs_off(deployed):
    """faster running with its worker, then a deploy with jobs_enabled=False; afterwards the default deploy."""
    key = deployed["secrets"]["WHISPER_API_KEY"]
    assert curl(FASTER, "/v1/models", "-H", f"Authorization: Bearer {key}")["status"] == 200   # starts it
    # the proxy starts the job worker once the service has answered (docs: autostart/README.md)
    deadline = time.monotonic() + 30
    while not {"faster-whisper", "faster-whisper-worker"} <= running():
        assert time.monotonic() < deadline, running()
        time.sleep(0.5)
    yield pyinfra("-y", "--data", "jobs_enabled=False")
    pyinfra("-y")
    assert "faster-whisper-worker" in ssh(f"cat {COMPOSE}").stdout


def test_jobs_enabled_false_drops_the_workers_and_answers_503(jobs_off, deployed):
    compose = ssh(f"cat {COMPOSE}").stdout
    assert "faster-whisper-worker" not in compose and "STT_REDIS_URL" not in compose
    assert "jobs.env" not in compose and "/run/redis" not in compose
    # the running service was recreated without its worker
    names = running()
    assert "faster-whisper" in names and "faster-whisper-worker" not in names
    key = deployed["secrets"]["WHISPER_API_KEY"]
    auth = ("-H", f"Authorization: Bearer {key}")
    assert curl(FASTER, "/v1/models", *auth)["status"] == 200
    job = curl(FASTER, "/v1/jobs", *auth, "-X", "POST", "-F", "model=tiny.en")
    assert job["status"] == 503 and "jobs_unavailable" in job["body"], job
    again = pyinfra("-y", "--json", "--data", "jobs_enabled=False")
    assert again.changed() == 0, again.stdout[-3000:]


WHISPERX = "whisperx.sandbox.test"
WX_OFF = ["--data", 'service_overrides_extra={"whisperx": {"enabled": false}}']
CONFIG = "/opt/docker-autostart/config.json"


def all_containers() -> set[str]:
    return set(ssh("docker ps -a --format '{{.Names}}'").stdout.split())


def server_names() -> str:
    return ssh("nginx -T 2>/dev/null | grep -E '^\\s*server_name'").stdout


@pytest.fixture(scope="module")
def whisperx_running(deployed):
    """The default deploy's state (the module's other fixtures are torn down only at its end), whisperx with
    its job worker up (as after its first request); afterwards the host is as the default deploy leaves it,
    also when the scenario stopped half-way."""
    pyinfra("-y")
    ssh("cd /opt/whisperx && if docker compose version >/dev/null 2>&1; then docker compose up -d; "
        "else docker-compose up -d; fi")
    assert {"whisperx", "whisperx-worker"} <= running()
    state = {"restored": False}
    yield state
    if not state["restored"]:
        pyinfra("-y")


def test_disabled_service_is_retired_kept_for_later_and_comes_back(whisperx_running, deployed):
    key = deployed["secrets"]["WHISPER_API_KEY"]
    auth = ("-H", f"Authorization: Bearer {key}")
    config_before = ssh(f"cat {CONFIG}").stdout
    env_before = ssh("stat -c '%a %U' /opt/whisperx/.env && sha256sum /opt/whisperx/.env").stdout
    image = ssh("docker inspect -f '{{.Config.Image}}' whisperx").stdout.strip()
    # the dry run says what it will retire and changes nothing
    before = host_snapshot()
    dry = pyinfra("--dry", "--diff", *WX_OFF)
    assert "whisperx: retire (enabled False): compose down" in dry.output
    assert f"Will remove /etc/nginx/sites-enabled/{WHISPERX} (a retired service's" in dry.output
    assert f"Will remove the autostart entries of the retired service(s) {WHISPERX}" in dry.output
    assert host_snapshot() == before and {"whisperx", "whisperx-worker"} <= running()

    pyinfra("-y", *WX_OFF)
    # its containers and its job worker are gone; nginx no longer has its vhost; the other service answers
    assert not {"whisperx", "whisperx-worker"} & all_containers()
    assert WHISPERX not in server_names() and "whisper.sandbox.test" in server_names()
    assert curl(WHISPERX, "/health", *auth)["status"] != 200
    assert curl(FASTER, "/v1/models", *auth)["status"] == 200
    # its autostart entry is cut out, every other byte as it was
    config = ssh(f"cat {CONFIG}").stdout
    assert set(json.loads(config)["services"]) == set(json.loads(config_before)["services"]) - {WHISPERX}
    common = next(i for i, (a, b) in enumerate(zip(config + "\0", config_before)) if a != b)
    cut = config_before[common:len(config_before) - len(config) + common]
    assert config_before[:common] + config_before[common + len(cut):] == config
    assert WHISPERX in cut and "whisper.sandbox.test" not in cut and "blog" not in cut
    assert FOREIGN_ENTRY in config
    # kept for turning it back on: its image, its secrets, its project folder
    assert ssh(f"docker image inspect -f ok {image}").stdout.strip() == "ok"
    assert ssh("stat -c '%a %U' /opt/whisperx/.env && sha256sum /opt/whisperx/.env").stdout == env_before
    assert ssh("test -f /opt/whisperx/docker-compose.yml", check=False).returncode == 0
    # the same run again: nothing to do
    again = pyinfra("-y", "--json", *WX_OFF)
    assert again.changed() == 0, again.stdout[-3000:]

    # the default deploy brings it back: vhost, entry, and the proxy starts it on its first request
    pyinfra("-y")
    whisperx_running["restored"] = True
    assert WHISPERX in server_names()
    assert json.loads(ssh(f"cat {CONFIG}").stdout)["services"][WHISPERX]["composeDir"] == "/opt/whisperx"
    health = curl(WHISPERX, "/health", *auth)
    assert health["status"] == 200, health["body"][:300]
