"""What each deploy option changes in what the stages render or run, checked without a host (the
sandbox-host scenarios of the options are in tests/e2e/test_deploy_options.py)."""

from __future__ import annotations

import jinja2
import pytest

from stages.compose_projects import compose_values
from stages.images import build_command, image_tag
from stages.settings import REPO, Platform, read_group_data
from stages.web import cert_paths, render_http_vhost, render_https_vhost


def build(*groups, **over):
    return Platform.from_group_data(read_group_data(*groups, **over))


def render_compose(p: Platform, key: str) -> str:
    svc = p.service(key)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "templates/compose")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("service.yml.j2").render(
        **{**compose_values(svc, p), "image_tag": "whisperx:src-0"})


@pytest.mark.parametrize("ipv6", [True, False])
def test_listen_ipv6(ipv6):
    p = build(listen_ipv6=ipv6)
    svc = p.service("faster")
    for text in (render_http_vhost(svc, p), render_https_vhost(svc, p)):
        assert ("listen [::]:" in text) is ipv6


def test_tls_mode_picks_the_certificate_paths():
    svc_le = build().service("faster")
    assert cert_paths(svc_le, build()) == ("/etc/letsencrypt/live/whisper.srv759970.hstgr.cloud/fullchain.pem",
                                           "/etc/letsencrypt/live/whisper.srv759970.hstgr.cloud/privkey.pem")
    p = build(tls_mode="selfsigned", selfsigned_dir="/etc/ssl/x")
    assert cert_paths(p.service("faster"), p) == ("/etc/ssl/x/whisper.srv759970.hstgr.cloud.crt",
                                                  "/etc/ssl/x/whisper.srv759970.hstgr.cloud.key")


def test_jobs_enabled_adds_the_worker_redis_and_jobs_folder():
    on, off = render_compose(build(), "whisperx"), render_compose(build(jobs_enabled=False), "whisperx")
    for piece in ("whisperx-worker:", "whisperx_server.worker", "STT_REDIS_URL", "/etc/whisper-platform/jobs.env",
                  "/var/lib/whisper-platform/jobs/whisperx:/jobs", "/run/whisper-platform/redis:/run/redis:ro",
                  "STT_JOBS_MIN_FREE_MB"):
        assert piece in on and piece not in off


def test_speaker_store_mounts_the_enrolled_voices():
    whisperx, faster = render_compose(build(), "whisperx"), render_compose(build(), "faster")
    for piece in ("STT_SPEAKERS_DIR: /speakers", "/var/lib/whisper-platform/speakers/whisperx:/speakers"):
        assert piece in whisperx and piece not in faster
    moved = render_compose(build(speakers_dir="/srv/voices"), "whisperx")
    assert "/srv/voices/whisperx:/speakers" in moved
    off = render_compose(build(service_overrides={"whisperx": {"speaker_store": False}}), "whisperx")
    assert "/speakers" not in off


def test_containers_restart_by_themselves_and_log_within_limits():
    """unless-stopped: what the autostart proxy stopped stays stopped; what died comes back. Logs: the local
    driver with this project's limits, never the host's daemon.json."""
    import yaml

    p = build(container_log_max_size="5m", container_log_max_files=2)
    doc = yaml.safe_load(render_compose(p, "faster"))
    for name in ("faster-whisper", "faster-whisper-worker"):
        c = doc["services"][name]
        assert c["restart"] == "unless-stopped" and c["init"] is True, name
        assert c["logging"] == {"driver": "local", "options": {"max-size": "5m", "max-file": "2"}}, name
    worker = doc["services"]["faster-whisper-worker"]
    assert worker["stop_grace_period"] == "30s"
    assert worker["environment"]["STT_REDIS_URL"] == "unix:///run/redis/redis.sock"
    assert "/run/redis:/run/redis" not in render_compose(p, "faster")   # never Redis's own RuntimeDirectory


@pytest.mark.parametrize("key,value", [("container_log_max_size", "10"), ("container_log_max_size", "10 m"),
                                       ("container_log_max_files", 0), ("autostart_journal_max_use", "64 MB"),
                                       ("redis_socket_dir", "run/x"), ("jobs_min_free_mb", -1)])
def test_day_two_knobs_are_checked(key, value):
    from stages.settings import GroupDataError

    with pytest.raises(GroupDataError, match=key):
        build(**{key: value})


def test_device_cuda_reserves_the_gpus():
    cuda = build(service_overrides={"whisperx": {"device": "cuda", "compute_type": "float16"}})
    assert "driver: nvidia" in render_compose(cuda, "whisperx") and 'STT_DEVICE: "cuda"' in render_compose(cuda, "whisperx")
    assert "driver: nvidia" not in render_compose(build(), "whisperx")


def test_service_limits_reach_the_compose_file():
    text = render_compose(build(service_overrides={"faster": {"mem_limit": "2g", "cpus": 1.5, "tmp_size": "512m"}}),
                          "faster")
    assert "mem_limit: 2g" in text and "cpus: 1.5" in text and "/tmp/stt:size=512m,mode=1777" in text


def test_build_wheelhouse_and_build_args_reach_the_build_command():
    sandbox = build("sandbox", service_overrides={"whisperx": {"build_args": {"TORCH_INDEX_URL": "https://i/simple"}}})
    svc = sandbox.service("whisperx")
    cmd = build_command(svc, image_tag(svc, sandbox), sandbox)
    assert "--wheelhouse /var/cache/whisper-platform/wheelhouse --wheelhouse-port 3141" in cmd
    assert "--build-arg BASE_IMAGE=local/python:3.11-slim --build-arg TORCH_INDEX_URL=https://i/simple" in cmd
    assert "--file /opt/whisper-platform/images/whisperx/Dockerfile" in cmd
    plain = build()
    cmd = build_command(plain.service("faster"), "whisper-faster:src-0", plain)
    assert "--wheelhouse" not in cmd and "--build-arg BASE_IMAGE=python:3.11-slim " in cmd
    assert "--stall-timeout 1800" in cmd and "--label whisper-platform.service=faster" in cmd


def test_redis_socket_lives_in_a_folder_no_restart_deletes():
    """Not Redis's RuntimeDirectory (/run/redis, deleted and made anew by systemd on every Redis restart): a folder
    of ours, made by systemd-tmpfiles at boot, setgid to the services' group; the unit may write there."""
    from stages import redis

    p = build(redis_socket_dir="/run/whisper-platform/redis", app_user="whisper-app")
    lines = [line for line in redis.tmpfiles_conf(p).splitlines() if not line.startswith("#")]
    assert lines == ["d /run/whisper-platform 0755 root root -", "d /run/whisper-platform/redis 2750 redis whisper-app -"]
    assert "ReadWritePaths=/run/whisper-platform/redis" in redis.unit_dropin(p).splitlines()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    conf = env.from_string((REPO / "templates/redis/whisper-platform.conf.j2").read_text()).render(
        redis_port=6379, redis_maxmemory="256mb", redis_socket=redis.socket_path(p))
    assert "unixsocket /run/whisper-platform/redis/redis.sock" in conf and "unixsocketperm 770" in conf
    assert "/run/redis" not in [line.split()[-1] for line in conf.splitlines() if line.startswith("unixsocket ")]


@pytest.mark.parametrize("jobs, relays", [(True, 0), (True, 2), (False, 0)])
def test_the_autostart_entry_lists_every_container_the_compose_file_makes(jobs, relays):
    import yaml

    from stages.autostart_registry import entry_for
    p = build(jobs_enabled=jobs)
    for key in ("faster", "whisperx"):
        svc = p.service(key)
        rendered = yaml.safe_load(jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(REPO / "templates/compose")), undefined=jinja2.StrictUndefined,
        ).get_template("service.yml.j2").render(**{**compose_values(svc, p, relays=relays), "image_tag": "x:src-0"}))
        quick = entry_for(svc, p, relays)["dockerStart"]
        services = rendered["services"].values()
        assert quick["containers"] == [s["container_name"] for s in services]
        # the compose file itself and every env file it reads
        env_files = {f if f.startswith("/") else f"{svc.project_dir}/{f}" for s in services for f in s["env_file"]}
        assert env_files | {f"{svc.project_dir}/docker-compose.yml"} == set(quick["madeFrom"])
