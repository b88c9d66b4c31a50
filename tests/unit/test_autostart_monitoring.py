"""docker_autostart.monitoring: the file_sd file of the services that run and their containers' memory, from the
docker CLI's answers (a stand-in `docker` that prints what the real one prints) and cgroup files laid out as the
kernel shows them (version 2, and version 1 for older hosts)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from docker_autostart.config_file import parse_config
from docker_autostart.docker import Docker
from docker_autostart.monitoring import ContainerMonitor, cgroup_dir, cgroup_memory
from docker_autostart.proxy import Autostart

GIB = 1024 ** 3


def fake_docker(tmp_path, ps: str, inspect: str):
    """A `docker` that answers `ps -a --format ...` and `inspect --format ...` with these lines."""
    script = tmp_path / "docker"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        if sys.argv[1] == "ps":
            sys.stdout.write({ps!r})
        elif sys.argv[1] == "inspect":
            names = sys.argv[sys.argv.index("--format") + 2:]
            for line in {inspect!r}.splitlines(keepends=True):
                if line.split("\\t")[0].lstrip("/") in names:
                    sys.stdout.write(line)
        """))
    script.chmod(0o755)
    return [str(script)]


def cgroup_v2(root, proc, pid: int, path: str, current: int, inactive: int, limit: str, oom_kill: int):
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(f"0::/{path}\n")
    folder = root / path
    folder.mkdir(parents=True)
    (folder / "memory.current").write_text(f"{current}\n")
    (folder / "memory.max").write_text(f"{limit}\n")
    (folder / "memory.stat").write_text(f"anon 100\nfile 300\ninactive_file {inactive}\nactive_file 5\n")
    (folder / "memory.events").write_text(f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {oom_kill}\noom_group_kill 0\n")


def test_cgroup_v2_working_set_limit_and_oom_kills(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    cgroup_v2(root, proc, 42, "system.slice/docker-abc.scope", 2 * GIB, GIB // 2, str(3 * GIB), 2)
    folder, version = cgroup_dir(42, str(proc), str(root))
    assert (folder, version) == (str(root / "system.slice/docker-abc.scope"), 2)
    assert cgroup_memory(folder, version) == (2 * GIB - GIB // 2, 3 * GIB, 2)
    # no mem_limit: "max"
    cgroup_v2(root, proc, 43, "docker/def", 100, 0, "max", 0)
    assert cgroup_memory(*cgroup_dir(43, str(proc), str(root))) == (100, 0, 0)


def test_cgroup_v1_memory_controller(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("12:cpuset:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    folder = root / "memory" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "memory.usage_in_bytes").write_text("5000\n")
    (folder / "memory.limit_in_bytes").write_text("9223372036854771712\n")   # "no limit" in version 1
    (folder / "memory.stat").write_text("cache 900\ntotal_inactive_file 1000\n")
    (folder / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert cgroup_dir(7, str(proc), str(root)) == (str(folder), 1)
    assert cgroup_memory(str(folder), 1) == (4000, 0, 1)


def test_a_process_that_is_gone_has_no_cgroup(tmp_path):
    assert cgroup_dir(99, str(tmp_path), str(tmp_path)) == (None, 0)


CONFIG = {"services": {
    "whisper.test": {"name": "Whisper", "composeDir": "/opt/whisper-faster", "proxyPort": 8001,
                     "containers": ["faster-whisper"], "readinessPath": "/health"},
    "whisperx.test": {"name": "WhisperX", "composeDir": "/opt/whisperx", "proxyPort": 8002,
                      "containers": ["whisperx"], "readinessPath": "/health"},
}}
PS = ("faster-whisper\t/opt/whisper-faster\nfaster-whisper-worker\t/opt/whisper-faster\n"
      "whisperx\t/opt/whisperx\nwhisperx-worker\t/opt/whisperx\nblog\t/opt/blog\nloose\t\n")


def monitor(tmp_path, inspect: str) -> tuple[ContainerMonitor, Autostart]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    cgroup_v2(root, proc, 101, "docker/a", 2 * GIB, 0, str(3 * GIB), 0)
    cgroup_v2(root, proc, 102, "docker/b", 2900 * 1024 ** 2, 0, str(3 * GIB), 1)
    autostart = Autostart(str(tmp_path / "config.json"), docker=Docker(docker_cmd=fake_docker(tmp_path, PS, inspect)))
    autostart.apply(parse_config(CONFIG))
    return ContainerMonitor(autostart, str(tmp_path / "sd" / "services.json"), proc=str(proc),
                            cgroup_root=str(root)), autostart


def samples(autostart) -> dict:
    out = {}
    for family in text_string_to_metric_families(autostart.metrics.render()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_running_services_become_targets_and_stopped_ones_leave(tmp_path):
    inspect = ("/faster-whisper\trunning\t101\tfalse\n/faster-whisper-worker\trunning\t102\tfalse\n"
               "/whisperx\texited\t0\tfalse\n/whisperx-worker\texited\t0\ttrue\n")
    mon, autostart = monitor(tmp_path, inspect)
    asyncio.run(mon.refresh())
    published = json.loads((tmp_path / "sd" / "services.json").read_text())
    assert published == [{"labels": {"host": "whisper.test", "name": "Whisper"}, "targets": ["127.0.0.1:8001"]}]
    assert oct((tmp_path / "sd" / "services.json").stat().st_mode & 0o777) == "0o644"

    got = samples(autostart)
    w = (("container", "faster-whisper-worker"), ("host", "whisper.test"))
    assert got[("docker_autostart_container_memory_bytes", w)] == 2900 * 1024 ** 2
    assert got[("docker_autostart_container_memory_limit_bytes", w)] == 3 * GIB
    assert got[("docker_autostart_container_oom_kills_total", w)] == 1
    assert got[("docker_autostart_container_running", w)] == 1
    # the stopped WhisperX: no memory, but its worker's last exit was an OOM kill
    x = (("container", "whisperx-worker"), ("host", "whisperx.test"))
    assert got[("docker_autostart_container_oom_killed", x)] == 1
    assert got[("docker_autostart_container_running", x)] == 0
    assert ("docker_autostart_container_memory_bytes", x) not in got
    # another tenant's containers are not ours to report
    assert not any(dict(labels).get("container") == "blog" for _, labels in got)


def test_the_file_changes_only_when_the_running_set_does(tmp_path):
    running = "/faster-whisper\trunning\t101\tfalse\n/whisperx\trunning\t102\tfalse\n"
    mon, autostart = monitor(tmp_path, running)
    asyncio.run(mon.refresh())
    target = tmp_path / "sd" / "services.json"
    assert [t["targets"] for t in json.loads(target.read_text())] == [["127.0.0.1:8001"], ["127.0.0.1:8002"]]
    before = target.stat().st_mtime_ns
    asyncio.run(mon.refresh())
    assert target.stat().st_mtime_ns == before
    autostart.docker.docker_cmd = fake_docker(tmp_path, PS, "/faster-whisper\texited\t0\tfalse\n"
                                                            "/whisperx\trunning\t102\tfalse\n")
    asyncio.run(mon.refresh())
    assert [t["targets"] for t in json.loads(target.read_text())] == [["127.0.0.1:8002"]]
