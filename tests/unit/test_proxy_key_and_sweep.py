"""Host-side pieces of the jobs' trust rules, without a host: the proxy key's files as the host's shell makes them
(real sh, real openssl, in a temporary folder), and the hourly sweep's systemd units."""
from __future__ import annotations

import os
import re
import subprocess

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from stages import identity
from stages.settings import REPO, Platform, read_group_data


def test_the_proxy_key_is_made_on_the_host_once_and_never_in_argv(tmp_path):
    env_file = tmp_path / "etc" / "proxy.env"
    generate = identity.generate_command(str(env_file))
    subprocess.run(["sh", "-c", generate], check=True)
    text = env_file.read_text()
    assert re.fullmatch(r"STT_PROXY_KEY=pk-[0-9a-f]{64}\n", text)
    assert oct(os.stat(env_file).st_mode & 0o777) == "0o600" and oct(os.stat(env_file.parent).st_mode & 0o777) == "0o700"
    key = text.split("=", 1)[1].strip()
    assert key not in generate   # made by openssl on the host: the command holds no secret
    conf = tmp_path / "proxy-key.conf"
    line = identity.nginx_line_command(str(env_file), str(conf))
    subprocess.run(["sh", "-c", line], check=True)
    assert conf.read_text() == f'default "Bearer {key}";\n' and key not in line
    assert oct(os.stat(conf).st_mode & 0o777) == "0o600"


def test_the_sweep_runs_each_services_worker_image_hourly():
    p = Platform.from_group_data(read_group_data())
    env = Environment(loader=FileSystemLoader(str(REPO / "templates/systemd")), undefined=StrictUndefined)
    unit = env.get_template("whisper-jobs-sweep.service.j2").render(
        projects=[(s.project_dir, f"{s.container}-worker") for s in p.services], compose="docker compose")
    lines = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert lines == [
        "ExecStart=-/bin/sh -c 'cd /opt/whisper-faster && docker compose run --rm --no-deps -T faster-whisper-worker "
        "/opt/venv/bin/python -m stt_common.jobs.sweep'",
        "ExecStart=-/bin/sh -c 'cd /opt/whisperx && docker compose run --rm --no-deps -T whisperx-worker "
        "/opt/venv/bin/python -m stt_common.jobs.sweep'"]
    timer = env.get_template("whisper-jobs-sweep.timer.j2").render()
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer
