"""What Prometheus needs from the proxy (--targets-file): which services run, and how much memory their
containers use.

- The running set as a Prometheus file_sd file: a service is listed (`127.0.0.1:<proxyPort>`, labels `host` and
  `name`) while all its containers run, and leaves the file when it stops. Prometheus scrapes the listed ports
  directly, never through the proxy, so a scrape can neither start a service nor count as its activity, and a
  service stopped on purpose is no target at all (no failed scrapes to tell apart from an outage).
- Its containers' memory (every container of the service's compose project: the API and its job worker), read
  from their cgroups: working set (usage less inactive page cache), limit, kernel OOM kills, and whether the last
  exit was an OOM kill. Exported with the proxy's own /metrics (docker_autostart_container_*).

Docker is asked every `interval` seconds (two CLI calls), and at once when the proxy's own view of a service
changes (a start or an idle stop), so the file follows starts and stops within a second or two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .docker import DockerError, run

log = logging.getLogger("docker_autostart")

PROJECT_LABEL = "com.docker.compose.project.working_dir"
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass
class ContainerStats:
    host: str
    container: str
    running: bool
    oom_killed: bool                 # Docker's State.OOMKilled: its last exit was an OOM kill
    memory: Optional[int] = None     # working set, bytes (running only)
    limit: Optional[int] = None      # 0 = no limit
    oom_kills: Optional[int] = None  # the cgroup's oom_kill count (processes killed inside it)


@dataclass
class Snapshot:
    running: List[str] = field(default_factory=list)        # hosts whose containers all run
    containers: List[ContainerStats] = field(default_factory=list)


def cgroup_dir(pid: int, proc: str = "/proc", root: str = CGROUP_ROOT) -> Tuple[Optional[str], int]:
    """(the memory cgroup folder of a process, cgroup version 2 or 1); (None, 0) when not found."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None, 0
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
            path = os.path.join(root, parts[2].lstrip("/"))
            if os.path.exists(os.path.join(path, "memory.current")):
                return path, 2
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            path = os.path.join(root, "memory", parts[2].lstrip("/"))
            if os.path.isdir(path):
                return path, 1
    return None, 0


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def _keyed(text: Optional[str]) -> Dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def cgroup_memory(path: str, version: int) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """(working set, limit (0: none), OOM kills) of a memory cgroup folder."""
    if version == 2:
        usage, limit = _read(f"{path}/memory.current"), _read(f"{path}/memory.max")
        stat, events = _keyed(_read(f"{path}/memory.stat")), _keyed(_read(f"{path}/memory.events"))
        inactive = stat.get("inactive_file", 0)
        oom = events.get("oom_kill")
    else:
        usage, limit = _read(f"{path}/memory.usage_in_bytes"), _read(f"{path}/memory.limit_in_bytes")
        stat, control = _keyed(_read(f"{path}/memory.stat")), _keyed(_read(f"{path}/memory.oom_control"))
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        oom = control.get("oom_kill")
    if usage is None or not usage.strip().isdigit():
        return None, None, oom
    used = max(0, int(usage) - inactive)
    text = (limit or "").strip()
    # cgroup v1 writes "no limit" as a huge number
    cap = int(text) if text.isdigit() and int(text) < 2 ** 60 else 0
    return used, cap, oom


class ContainerMonitor:
    def __init__(self, autostart, targets_file: Optional[str], interval: float = 10.0, proc: str = "/proc",
                 cgroup_root: str = CGROUP_ROOT):
        self.autostart = autostart
        self.targets_file = targets_file
        self.interval = interval
        self.proc, self.cgroup_root = proc, cgroup_root
        self.snapshot = Snapshot()
        self._published: Optional[str] = None
        self._task: Optional[asyncio.Future] = None
        autostart.metrics.registry.register(self)

    # ------------------------------------------------------------ the hook (Autostart's plugins)
    def attach(self, app) -> None:
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    async def _start(self, app) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def _stop(self, app) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def _proxy_view(self) -> tuple:
        return tuple(sorted((h, s.describe()) for h, s in self.autostart.states.items()))

    async def _loop(self) -> None:
        seen, waited = None, self.interval
        while True:
            view = self._proxy_view()
            if view != seen or waited >= self.interval:
                seen, waited = view, 0.0
                try:
                    await self.refresh()
                except Exception:  # never let the monitor take the proxy down
                    log.exception("container monitor: refresh failed")
            await asyncio.sleep(1.0)
            waited += 1.0

    # ------------------------------------------------------------ docker and cgroups
    async def refresh(self) -> Snapshot:
        services = {h: s.cfg for h, s in self.autostart.states.items()}
        docker = list(self.autostart.docker.docker_cmd)
        by_dir: Dict[str, List[str]] = {}
        res = await run(docker + ["ps", "-a", "--format", "{{.Names}}\t{{.Label \"%s\"}}" % PROJECT_LABEL], timeout=30)
        if res.rc != 0:
            raise DockerError(f"docker ps failed: {res.stderr.strip()[:300]}")
        for line in res.stdout.splitlines():
            name, _, workdir = line.partition("\t")
            if workdir:
                by_dir.setdefault(workdir.strip(), []).append(name.strip())
        names = sorted({c for cfg in services.values() for c in cfg.containers}
                       | {c for cfg in services.values() for c in by_dir.get(cfg.compose_dir, [])})
        inspected: Dict[str, dict] = {}
        if names:
            fmt = "{{.Name}}\t{{.State.Status}}\t{{.State.Pid}}\t{{.State.OOMKilled}}"
            res = await run(docker + ["inspect", "--type", "container", "--format", fmt, *names], timeout=30)
            for line in res.stdout.splitlines():
                parts = line.strip().split("\t")
                if len(parts) == 4:
                    inspected[parts[0].lstrip("/")] = {"status": parts[1], "pid": int(parts[2] or 0),
                                                       "oom": parts[3] == "true"}
        snap = Snapshot()
        for host, cfg in sorted(services.items()):
            if all(inspected.get(c, {}).get("status") == "running" for c in cfg.containers):
                snap.running.append(host)
            for container in sorted(set(cfg.containers) | set(by_dir.get(cfg.compose_dir, []))):
                info = inspected.get(container)
                if info is None:
                    continue
                stats = ContainerStats(host, container, info["status"] == "running", info["oom"])
                if stats.running and info["pid"] > 0:
                    path, version = cgroup_dir(info["pid"], self.proc, self.cgroup_root)
                    if path:
                        stats.memory, stats.limit, stats.oom_kills = cgroup_memory(path, version)
                snap.containers.append(stats)
        self.snapshot = snap
        self.publish()
        return snap

    def targets(self) -> list:
        out = []
        for host in self.snapshot.running:
            st = self.autostart.states.get(host)
            if st is not None:
                out.append({"targets": [f"127.0.0.1:{st.cfg.proxy_port}"], "labels": {"host": host, "name": st.cfg.name}})
        return out

    def publish(self) -> None:
        """Rewrite the file_sd file when the running set changed (atomically: Prometheus never reads half)."""
        if not self.targets_file:
            return
        text = json.dumps(self.targets(), indent=1, sort_keys=True) + "\n"
        if text == self._published:
            return
        folder = os.path.dirname(self.targets_file) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".services.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.targets_file)
        except OSError as exc:
            log.error("cannot write the targets file %s: %s", self.targets_file, exc)
            return
        self._published = text
        log.info("targets file %s: %s", self.targets_file, ", ".join(self.snapshot.running) or "no service running")

    # ------------------------------------------------------------ Prometheus collector
    def collect(self):
        p = "docker_autostart_container_"
        labels = ["host", "container"]
        running = GaugeMetricFamily(p + "running", "1 while the container runs (every container of the service's "
                                    "compose project)", labels=labels)
        memory = GaugeMetricFamily(p + "memory_bytes", "Working set: the cgroup's memory usage less its inactive "
                                   "page cache", labels=labels)
        limit = GaugeMetricFamily(p + "memory_limit_bytes", "The cgroup's memory limit (mem_limit); 0 = none",
                                  labels=labels)
        kills = CounterMetricFamily(p + "oom_kills", "Processes the kernel killed inside the container for lack of "
                                    "memory (since it started)", labels=labels)
        oom = GaugeMetricFamily(p + "oom_killed", "1 when the container's last exit was an OOM kill (Docker's "
                                "State.OOMKilled)", labels=labels)
        for c in self.snapshot.containers:
            key = [c.host, c.container]
            running.add_metric(key, 1 if c.running else 0)
            oom.add_metric(key, 1 if c.oom_killed else 0)
            if c.memory is not None:
                memory.add_metric(key, c.memory)
                limit.add_metric(key, c.limit or 0)
            if c.oom_kills is not None:
                kills.add_metric(key, c.oom_kills)
        yield from (running, memory, limit, kills, oom)
