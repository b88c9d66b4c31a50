"""The config file: the runbook's `/opt/docker-autostart/config.json` format.

    {"services": {"<hostname>": {"name", "composeDir", "proxyPort", "blocking", "containers",
                                 optional: "idleTimeout", "readinessPath", "maxWait",
                                 "upstreamTimeout", "wakePath", "dockerStart"}}}

"dockerStart": {"containers": [every container of the project], "madeFrom": [absolute paths]} lets the
proxy start the project's stopped containers with `docker start`, faster than `compose up -d`, when they are
still what compose would make: created after every file in "madeFrom" last changed (the compose file and the
env files it reads) and running the image their tag names now. Otherwise it runs `compose up -d` as always.

An entry without "readinessPath" (the runbook's format, other tenants' entries on a host taken
over) is ready once its port answers HTTP at all (any status below 500), as the runbook's Node
proxy only waited for the port; with one, only a 2xx from that path counts.

Unknown keys, at the top or inside an entry, are ignored (the file is shared with other
tools on a live host). Any invalid entry rejects the whole file: the caller keeps serving
the last good config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

DEFAULT_IDLE_TIMEOUT = 1800.0
DEFAULT_MAX_WAIT = 300.0
DEFAULT_UPSTREAM_TIMEOUT = 600.0


class ConfigError(ValueError):
    """The file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class ServiceConfig:
    host: str
    name: str
    compose_dir: str
    proxy_port: int
    blocking: bool
    containers: Tuple[str, ...]
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0 = never stop
    readiness_path: str | None = None  # None: any answer below 500 at "/" (see the module doc)
    max_wait: float = DEFAULT_MAX_WAIT
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    wake_path: str | None = None  # a request here starts the service and is answered at once (202)
    docker_start: "DockerStart | None" = None  # stopped containers may be started without compose (module doc)


@dataclass(frozen=True)
class DockerStart:
    containers: Tuple[str, ...]   # every container of the project, each started by `docker start`
    made_from: Tuple[str, ...]    # the files compose makes them from: changed since, `compose up -d` instead


@dataclass(frozen=True)
class Config:
    services: Dict[str, ServiceConfig] = field(default_factory=dict)

    def lookup(self, host: str | None) -> ServiceConfig | None:
        if not host:
            return None
        return self.services.get(host)


def normalize_host(value: str) -> str:
    """Lowercase, without a trailing dot; used for config keys and Host headers alike."""
    return value.strip().lower().rstrip(".")


def _number(entry: Mapping[str, Any], key: str, default: float, where: str, *, allow_zero: bool) -> float:
    if key not in entry:
        return default
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key!r} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ConfigError(f"{where}: {key!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def parse_service(host_key: str, entry: Any) -> ServiceConfig:
    where = f"services[{host_key!r}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object, got {type(entry).__name__}")
    host = normalize_host(host_key)
    if not host or any(c in host for c in " /:\t"):
        raise ConfigError(f"{where}: not a hostname (no port, scheme or path)")

    name = entry.get("name", host)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string")

    compose_dir = entry.get("composeDir")
    if not isinstance(compose_dir, str) or not compose_dir.strip():
        raise ConfigError(f"{where}: 'composeDir' is required (a folder holding the compose file)")
    if not os.path.isabs(compose_dir):
        raise ConfigError(f"{where}: 'composeDir' must be an absolute path, got {compose_dir!r}")

    port = entry.get("proxyPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: 'proxyPort' must be a port number 1-65535, got {port!r}")

    blocking = entry.get("blocking", True)
    if not isinstance(blocking, bool):
        raise ConfigError(f"{where}: 'blocking' must be true or false, got {blocking!r}")

    containers = entry.get("containers")
    if (not isinstance(containers, list) or not containers
            or not all(isinstance(c, str) and c.strip() for c in containers)):
        raise ConfigError(f"{where}: 'containers' must be a non-empty list of container names")

    readiness = entry.get("readinessPath")
    if readiness is not None and (not isinstance(readiness, str) or not readiness.startswith("/")):
        raise ConfigError(f"{where}: 'readinessPath' must be a path starting with '/', got {readiness!r}")

    wake = entry.get("wakePath")
    if wake is not None and (not isinstance(wake, str) or not wake.startswith("/") or wake == "/"):
        raise ConfigError(f"{where}: 'wakePath' must be a path starting with '/' (not '/' alone), got {wake!r}")

    docker_start = _docker_start(entry.get("dockerStart"), where, tuple(c.strip() for c in containers))

    return ServiceConfig(
        host=host,
        name=name,
        compose_dir=compose_dir,
        proxy_port=port,
        blocking=blocking,
        containers=tuple(c.strip() for c in containers),
        idle_timeout=_number(entry, "idleTimeout", DEFAULT_IDLE_TIMEOUT, where, allow_zero=True),
        readiness_path=readiness,
        max_wait=_number(entry, "maxWait", DEFAULT_MAX_WAIT, where, allow_zero=False),
        upstream_timeout=_number(entry, "upstreamTimeout", DEFAULT_UPSTREAM_TIMEOUT, where, allow_zero=False),
        wake_path=wake,
        docker_start=docker_start,
    )


def _docker_start(value: Any, where: str, containers: Tuple[str, ...]) -> "DockerStart | None":
    if value is None:
        return None
    where = f"{where}.dockerStart"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be an object with 'containers' and 'madeFrom'")
    names, files = value.get("containers"), value.get("madeFrom")
    if not isinstance(names, list) or not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise ConfigError(f"{where}: 'containers' must be a non-empty list of container names")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and os.path.isabs(f) for f in files):
        raise ConfigError(f"{where}: 'madeFrom' must be a non-empty list of absolute paths")
    names = [c.strip() for c in names]
    missing = [c for c in containers if c not in names]
    if missing:
        raise ConfigError(f"{where}: 'containers' must include the entry's own containers, missing {missing}")
    return DockerStart(tuple(names), tuple(files))


def parse_config(data: Any) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a JSON object, got {type(data).__name__}")
    services = data.get("services", {})
    if not isinstance(services, dict):
        raise ConfigError("'services' must be an object keyed by hostname")
    parsed: Dict[str, ServiceConfig] = {}
    for key, entry in services.items():
        svc = parse_service(key, entry)
        if svc.host in parsed:
            raise ConfigError(f"services[{key!r}]: hostname listed twice (hostnames are case-insensitive)")
        parsed[svc.host] = svc
    return Config(parsed)


def parse_text(text: str) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from None
    return parse_config(data)


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8: {exc}") from None
    return parse_text(text)


def file_signature(path: str) -> Tuple[int, int, int] | None:
    """What the poller compares to notice a changed file (None: missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
