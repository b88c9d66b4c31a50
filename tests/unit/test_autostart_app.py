"""The proxy's own endpoints and routing, in process, without Docker (no service is woken:
nothing here may call docker), plus the compose command choice."""

import asyncio
import json
import os
import shutil
import stat

import pytest
from aiohttp.test_utils import TestClient, TestServer

from docker_autostart.docker import Docker, DockerError, DockerUnavailable, failed, tail
from docker_autostart.proxy import Autostart
from docker_autostart.readiness import permanent_problem

CONFIG = {"services": {"Whisper.Example.test": {
    "name": "W", "composeDir": "/nonexistent", "proxyPort": 1, "blocking": True, "containers": ["w"]}},
    "logLevel": "debug"}


class NoDocker(Docker):
    """Fails the test if anything tries to touch Docker."""

    async def compose_cmd(self):
        return ["compose-not-used"]

    async def running(self, containers):
        raise AssertionError("docker inspect called")

    async def compose(self, compose_dir, *args):
        raise AssertionError("compose called")


def run_with_client(tmp_path, body):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))

    async def main():
        autostart = Autostart(str(path), docker=NoDocker(), poll_interval=0)
        autostart.reload("test")
        async with TestClient(TestServer(autostart.make_app())) as client:
            await body(client, autostart)

    asyncio.run(main())


def test_own_health_and_metrics_for_hosts_that_are_not_services(tmp_path):
    async def body(client, autostart):
        r = await client.get("/health", headers={"Host": "127.0.0.1:8890"})
        assert r.status == 200
        data = await r.json()
        assert data["status"] == "ok" and data["config_error"] is None
        assert data["services"]["whisper.example.test"]["state"] == "unknown"
        m = await client.get("/metrics", headers={"Host": "localhost"})
        assert m.status == 200 and m.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'docker_autostart_in_flight_requests{host="whisper.example.test"} 0' in await m.text()
        assert 'docker_autostart_config_reloads_total{result="ok"} 1' in await m.text()

    run_with_client(tmp_path, body)


def test_unknown_host_is_404_json(tmp_path):
    async def body(client, autostart):
        r = await client.post("/v1/audio/transcriptions", headers={"Host": "other.example.test"}, data=b"x")
        assert r.status == 404
        err = (await r.json())["error"]
        assert err["type"] == "unknown_host" and err["host"] == "other.example.test"

    run_with_client(tmp_path, body)


def test_reload_with_bad_file_keeps_services(tmp_path):
    async def body(client, autostart):
        (tmp_path / "config.json").write_text('{"services": {"a.test": {"proxyPort": 1}}}')
        assert autostart.reload("test") is False
        assert list(autostart.states) == ["whisper.example.test"]
        assert "composeDir" in autostart.config_error
        r = await client.get("/health")
        assert (await r.json())["config_error"] == autostart.config_error

    run_with_client(tmp_path, body)


def _script(folder, name, rc):
    p = folder / name
    p.write_text(f"#!/bin/sh\necho \"$0 $*\"\nexit {rc}\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


@pytest.mark.parametrize("v2_rc, expect", [(0, "v2"), (1, "v1")])
def test_compose_v2_preferred_then_v1(tmp_path, monkeypatch, v2_rc, expect):
    """Stub CLIs: Compose v2 does not exist on bookworm, so the choice is checked with scripts."""
    docker = _script(tmp_path, "docker", v2_rc)
    _script(tmp_path, "docker-compose", 0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cmd = asyncio.run(Docker(docker_cmd=[docker]).compose_cmd())
    assert cmd == ([docker, "compose"] if expect == "v2" else ["docker-compose"])


def test_compose_override_and_none_found(tmp_path, monkeypatch):
    assert asyncio.run(Docker(compose_cmd=["my", "compose"]).compose_cmd()) == ["my", "compose"]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DockerError, match="neither `docker compose` nor `docker-compose`"):
        asyncio.run(Docker(docker_cmd=[str(tmp_path / "docker")]).compose_cmd())


@pytest.mark.parametrize("stderr, unavailable", [
    # the docker CLI, Compose v2 and v1 while the daemon restarts or is stopped
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", True),
    ("error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.41/containers/json\": dial unix "
     "/var/run/docker.sock: connect: connection refused", True),
    ("Couldn't connect to Docker daemon at http+docker://localhost - is it running?\n\nIf it's at a non-standard "
     "location, specify the URL with the DOCKER_HOST environment variable.", True),
    # what waiting does not fix
    ("Error: No such object: faster-whisper", False),
    ("ERROR: for faster-whisper  Cannot create container for service faster-whisper: Conflict. The container name "
     "\"/faster-whisper\" is already in use", False),
    ("yaml.scanner.ScannerError: mapping values are not allowed here", False),
])
def test_a_daemon_that_does_not_answer_is_told_apart(stderr, unavailable):
    err = failed("docker inspect failed", stderr)
    assert isinstance(err, DockerError) and isinstance(err, DockerUnavailable) is unavailable


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on this machine (make docker installs it)")
def test_the_real_cli_without_a_daemon_is_unavailable(tmp_path):
    docker = Docker(docker_cmd=["docker", "-H", f"unix://{tmp_path}/no-daemon.sock"])
    with pytest.raises(DockerUnavailable, match="Cannot connect to the Docker daemon"):
        asyncio.run(docker.inspect(["faster-whisper"]))


def test_stderr_tail_keeps_the_last_lines():
    text = "\n".join(f"line {i}" for i in range(100)) + "\n\n"
    assert tail(text).splitlines() == [f"line {i}" for i in range(85, 100)]


@pytest.mark.parametrize("status, headers, body, expect", [
    # the whisper images' /health for STT_DEVICE=cuda without a GPU (marked both ways)
    (503, {"X-Health-Permanent": "true"}, {"status": "error", "error": "no GPU", "code": "device_unavailable"},
     "no GPU (device_unavailable)"),
    (503, {}, {"status": "error", "error": "no GPU", "code": "device_unavailable"}, "no GPU (device_unavailable)"),
    # OpenAI-shaped, by its code alone
    (503, {}, {"error": {"message": "no GPU", "type": "server_error", "code": "device_unavailable"}},
     "no GPU (device_unavailable)"),
    # any service, by the header alone; a body that is not JSON is quoted
    (500, {"X-Health-Permanent": "1"}, b"broken for good", "broken for good"),
    # what waiting can fix: loading, an unknown code, a model that failed to load (retried by the service)
    (503, {}, {"status": "loading"}, None),
    (503, {}, {"error": {"message": "busy", "code": "too_busy"}}, None),
    (503, {}, {"status": "error", "error": "cannot load"}, None),
    (503, {"X-Health-Permanent": "false"}, {"status": "loading"}, None),
    # a 2xx is ready whatever it carries
    (200, {"X-Health-Permanent": "true"}, {"code": "device_unavailable"}, None),
])
def test_permanent_problem_contract(status, headers, body, expect):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert permanent_problem(status, headers, raw) == expect
