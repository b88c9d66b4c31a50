"""templates/systemd/docker-autostart.service.j2 renders with the deploy's variables only."""

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
VARS = {"install_dir": "/opt/whisper-platform/autostart", "config_path": "/opt/docker-autostart/config.json",
        "listen": "127.0.0.1:8890", "targets_file": "", "journal_namespace": "whisper-platform"}


def render(**over):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = (REPO / "templates/systemd/docker-autostart.service.j2").read_text()
    return env.from_string(text).render(**{**VARS, **over})


def test_unit_runs_the_package_with_config_and_listen():
    unit = render()
    lines = unit.splitlines()
    assert ("ExecStart=/usr/bin/python3 -m docker_autostart --config /opt/docker-autostart/config.json "
            "--listen 127.0.0.1:8890") in lines
    assert "Environment=PYTHONPATH=/opt/whisper-platform/autostart" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Restart=on-failure" in lines and "User=root" in lines
    assert any(l.startswith("After=") and "docker.service" in l for l in lines)
    assert any(l.startswith("Wants=") and "docker.service" in l for l in lines)
    assert "WantedBy=multi-user.target" in lines
    # its logs in a namespace of its own, capped by the deploy; the host's journal settings are not touched
    assert "LogNamespace=whisper-platform" in lines
    assert "LogNamespace" not in render(journal_namespace="")


def test_with_monitoring_it_keeps_the_targets_file():
    lines = render(targets_file="/var/lib/whisper-platform/monitoring/services.json").splitlines()
    assert ("ExecStart=/usr/bin/python3 -m docker_autostart --config /opt/docker-autostart/config.json "
            "--listen 127.0.0.1:8890 --targets-file /var/lib/whisper-platform/monitoring/services.json") in lines


def test_every_variable_is_required():
    for name in VARS:
        with pytest.raises(jinja2.UndefinedError):
            env = jinja2.Environment(undefined=jinja2.StrictUndefined)
            env.from_string((REPO / "templates/systemd/docker-autostart.service.j2").read_text()).render(
                **{k: v for k, v in VARS.items() if k != name})


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed here")
def test_systemd_analyze_verify_accepts_it(tmp_path):
    path = tmp_path / "docker-autostart.service"
    path.write_text(render())
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "docker-autostart.service:" not in res.stderr, res.stderr
