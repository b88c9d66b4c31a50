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
                  "/var/lib/whisper-platform/jobs/whisperx:/jobs"):
        assert piece in on and piece not in off


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
