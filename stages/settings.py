"""The typed settings of one host: `Platform` (the host-wide knobs) and its `Service`s.

deploy.py builds them once per host from group_data (`Platform.from_group_data(host.data)`),
before anything changes on the host, and hands them to every stage. Nothing else reads group
data, and nothing writes into it: what a stage learns from the host (the Compose flavour) is a
fact it reads itself.

Every check names the group_data key it refuses, e.g.
`group_data: services[whisperx].secrets: unknown secret 'HF_TOKN' (known: HF_TOKEN, STT_API_KEYS)`.

To add a knob: a field here (with its check), its default in group_data/all.py, then the stage
or template that reads it. To add a per-service knob: a field of `Service` and the same key in
each entry of all.py's `services`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"

TLS_MODES = ("letsencrypt", "selfsigned")
DOCKER_INSTALL = ("auto", "never")
DEVICES = ("cpu", "cuda")
# the secrets a service's .env can receive (stages.compose_projects.env_values maps each to its variable)
SERVICE_SECRETS = ("STT_API_KEYS", "HF_TOKEN")
# what each image's Dockerfile copies from the build context (images/); others: build, common, <image_dir>
IMAGE_SOURCES = {
    "faster": ("build", "common", "faster"),
    "whisperx": ("build", "common", "diarize", "whisperx"),
}

# the monitoring stack's loopback listeners (stages/monitoring.py): one port each, none shared
MONITORING_PORTS = ("prometheus_port", "alertmanager_port", "node_exporter_port", "blackbox_exporter_port",
                    "redis_exporter_port", "nginx_exporter_port", "nginx_status_port", "grafana_port")

_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_IMAGE_NAME = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*")
_SIZE = re.compile(r"\d+(\.\d+)?[kKmMgG]?")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")   # Prometheus's durations (5m, 1h30m)
_PROM_SIZE = re.compile(r"[0-9]+(B|KB|MB|GB|TB|PB|EB)")
# values that reach nginx's config or a compose file: strict, so that none can end a line or a quoted string there
_TEXT = re.compile(r"[A-Za-z0-9 ._()/+,&-]{1,80}")                  # a service's name (comments, config.json)
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@:+-]{0,199}|/[A-Za-z0-9._/@:+-]{1,199}")  # a hub id, a name or a path
COMPUTE_TYPES = ("", "default", "auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")
_LISTEN = re.compile(r"((?P<v4>\d{1,3}(\.\d{1,3}){3})|\[(?P<v6>[0-9A-Fa-f:.]+)\]|\*):(?P<port>\d{1,5})|(?P<bare>\d{1,5})")
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
_LOCAL_PATH = re.compile(r"[^\n\r\0]+")


class GroupDataError(ValueError):
    """group_data holds a value the deploy cannot use; the message names the key. Raised before
    anything changes on the host."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"group_data: {key}: {problem}; nothing was changed on the host")
        self.key = key


# --- checks -----------------------------------------------------------------------------------
def _type(key: str, value, kind, what: str | None = None):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = what or (" or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__)
        raise GroupDataError(key, f"must be {names}, not {type(value).__name__} {value!r}")
    return value


def _port(key: str, value) -> int:
    _type(key, value, int, "a port number")
    if not 1 <= value <= 65535:
        raise GroupDataError(key, f"{value} is not a port (1 to 65535)")
    return value


def _listen(key: str, value) -> int:
    """nginx listen values: 443, "443", "127.0.0.1:8443", "[::1]:8443" or "*:443"; returns the port. Anything else
    (a space, a `;`, a newline: more nginx directives) is refused: the value is written into nginx's config."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _port(key, value)
    _type(key, value, (int, str))
    m = _LISTEN.fullmatch(value)
    if not m:
        raise GroupDataError(key, f"{value!r} is not PORT, IPV4:PORT, [IPV6]:PORT or *:PORT")
    import ipaddress
    try:
        if m.group("v4"):
            ipaddress.IPv4Address(m.group("v4"))
        elif m.group("v6"):
            ipaddress.IPv6Address(m.group("v6"))
    except ValueError:
        raise GroupDataError(key, f"{value!r} does not hold a valid IP address") from None
    return _port(key, int(m.group("port") or m.group("bare")))


def _model(key: str, value, empty: bool = False) -> str:
    """A model as the services take it (STT_MODEL, written into a compose file): a hub id, a catalogue name or a
    path, without spaces, quotes or line breaks."""
    _type(key, value, str)
    if empty and value == "":
        return value
    return _match(key, value, _MODEL, "a model name, hub id (org/name) or path, without spaces or quotes")


def _compute_type(key: str, value) -> str:
    _type(key, value, str)
    return _choice(key, value, COMPUTE_TYPES)


def _bounded(key: str, value, low: int, high: int) -> int:
    _type(key, value, int)
    if not low <= value <= high:
        raise GroupDataError(key, f"must be from {low} to {high}, not {value}")
    return value


def _ip_or_empty(key: str, value) -> str:
    _type(key, value, str)
    if value:
        import ipaddress
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise GroupDataError(key, f"{value!r} is not an IP address of the front (or empty)") from None
    return value


def _positive(key: str, value, zero: bool = False) -> int:
    _type(key, value, int)
    if value < 0 or (value == 0 and not zero):
        raise GroupDataError(key, f"must be {'0 or more' if zero else 'positive'}, not {value}")
    return value


def _choice(key: str, value, choices) -> str:
    if value not in choices:
        raise GroupDataError(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _match(key: str, value, pattern: re.Pattern, what: str) -> str:
    _type(key, value, str)
    if not pattern.fullmatch(value):
        raise GroupDataError(key, f"{value!r} is not {what}")
    return value


def _abs_path(key: str, value) -> str:
    _type(key, value, str)
    if not value.startswith("/") or any(c in value for c in " \n\"'$;`\\"):
        raise GroupDataError(key, f"{value!r} is not an absolute path without spaces or shell characters")
    return value.rstrip("/") or "/"


def _ratio(key: str, value) -> float:
    _type(key, value, (int, float))
    if not 0 < value <= 1:
        raise GroupDataError(key, f"must be a share above 0 and at most 1 (0.05 = 5 %), not {value}")
    return float(value)


def _percent(key: str, value) -> int:
    _type(key, value, int)
    if not 0 < value < 100:
        raise GroupDataError(key, f"must be a percentage between 1 and 99, not {value}")
    return value


def _emails(key: str, value) -> str:
    _type(key, value, str)
    for address in filter(None, (a.strip() for a in value.split(","))):
        if not re.fullmatch(r"[^@\s'\"<>,]+@[A-Za-z0-9.-]+", address):
            raise GroupDataError(key, f"{address!r} is not an e-mail address")
    return value


def _domain(key: str, value) -> str:
    _type(key, value, str)
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise GroupDataError(key, f"{value!r} is not a DNS name (lowercase labels separated by dots)")
    return value


def _str_map(key: str, value) -> Mapping[str, str]:
    _type(key, value, dict)
    for name, item in value.items():
        _match(f"{key}[{name!r}]", name, _ENV_NAME, "a variable name")
        _type(f"{key}[{name!r}]", item, (str, int, float))
        if any(c in str(item) for c in "\"\n\r"):
            raise GroupDataError(f"{key}[{name!r}]", "may not hold a quote or a newline")
    return MappingProxyType({k: str(v) for k, v in value.items()})


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --- one service ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Service:
    """One entry of group_data's `services`, with the group's overrides merged in and checked."""

    key: str                  # short name: stage labels, jobs folder, image label (faster, whisperx)
    name: str                 # what people read: compose file header, autostart entry
    subdomain: str            # vhost = <subdomain>.<domain>
    vhost: str
    project_dir: str          # the compose project on the host
    container: str
    image_name: str           # tags are <image_name>:src-<hash of its sources>
    image_dir: str            # images/<image_dir>/Dockerfile, build context images/
    sources: tuple[str, ...]  # the images/ folders its Dockerfile copies
    build_args: Mapping[str, str]
    port: int                 # loopback port of its API (the autostart proxy forwards to it)
    model: str
    device: str               # cpu or cuda
    compute_type: str
    gpu_count: int | str      # cuda: GPUs reserved for it, or "all"
    cpu_threads: int
    max_concurrency: int
    max_queue: int
    model_ttl: int
    mem_limit: str
    cpus: int | float
    tmp_size: str
    max_audio_seconds: int
    extra_env: Mapping[str, str]
    secrets: tuple[str, ...]  # which of SERVICE_SECRETS its .env receives
    worker_module: str        # its RQ worker (asynchronous jobs)
    speaker_store: bool       # enrolled voices: <speakers_dir>/<key> mounted at /speakers (POST /v1/speakers)
    blocking: bool            # autostart: hold requests while it starts (True) or answer 503
    enabled: bool

    @classmethod
    def from_entry(cls, entry: dict, domain: str) -> "Service":
        key = entry.get("key", "?")
        where = f"services[{key}]"
        known = {f.name for f in dataclasses.fields(cls)} - {"vhost", "sources"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise GroupDataError(f"{where}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})")
        missing = sorted(known - set(entry))
        if missing:
            raise GroupDataError(f"{where}.{missing[0]}", "missing (every service entry sets it, see group_data/all.py)")
        e = entry
        _match(f"{where}.key", e["key"], _KEY, "a short lowercase name (a-z, 0-9, _)")
        _match(f"{where}.name", e["name"], _TEXT, "a name of letters, digits, spaces and . _ ( ) / + , & -")
        _match(f"{where}.subdomain", e["subdomain"], _LABEL, "a DNS label")
        image_dir = _match(f"{where}.image_dir", e["image_dir"], _KEY, "a folder name under images/")
        if not (IMAGES / image_dir / "Dockerfile").is_file():
            raise GroupDataError(f"{where}.image_dir", f"images/{image_dir}/Dockerfile does not exist")
        build_args = _str_map(f"{where}.build_args", e["build_args"])
        secrets = tuple(_type(f"{where}.secrets", e["secrets"], (list, tuple), "a list of secret names"))
        for name in secrets:
            if name not in SERVICE_SECRETS:
                raise GroupDataError(f"{where}.secrets", f"unknown secret {name!r} (known: {', '.join(sorted(SERVICE_SECRETS))})")
        if len(set(secrets)) != len(secrets):
            raise GroupDataError(f"{where}.secrets", "names a secret twice")
        cpus = _type(f"{where}.cpus", e["cpus"], (int, float))
        if cpus <= 0:
            raise GroupDataError(f"{where}.cpus", f"must be positive, not {cpus}")
        for size in ("mem_limit", "tmp_size"):
            _match(f"{where}.{size}", e[size], _SIZE, "a size such as 512m or 2g")
        for flag in ("speaker_store", "blocking", "enabled"):
            _type(f"{where}.{flag}", e[flag], bool)
        return cls(
            key=e["key"], name=e["name"], subdomain=e["subdomain"], vhost=f"{e['subdomain']}.{domain}",
            project_dir=_abs_path(f"{where}.project_dir", e["project_dir"]),
            container=_match(f"{where}.container", e["container"], _DOCKER_NAME, "a container name"),
            image_name=_match(f"{where}.image_name", e["image_name"], _IMAGE_NAME, "an image name (lowercase)"),
            image_dir=image_dir, sources=IMAGE_SOURCES.get(image_dir, ("build", "common", image_dir)),
            build_args=build_args, port=_port(f"{where}.port", e["port"]),
            model=_model(f"{where}.model", e["model"]),
            device=_choice(f"{where}.device", e["device"], DEVICES),
            compute_type=_compute_type(f"{where}.compute_type", e["compute_type"]),
            gpu_count=e["gpu_count"] if e["gpu_count"] == "all" else _positive(f"{where}.gpu_count", e["gpu_count"]),
            cpu_threads=_positive(f"{where}.cpu_threads", e["cpu_threads"], zero=True),
            max_concurrency=_positive(f"{where}.max_concurrency", e["max_concurrency"]),
            max_queue=_positive(f"{where}.max_queue", e["max_queue"], zero=True),
            model_ttl=_positive(f"{where}.model_ttl", e["model_ttl"], zero=True),
            mem_limit=e["mem_limit"], cpus=cpus, tmp_size=e["tmp_size"],
            max_audio_seconds=_positive(f"{where}.max_audio_seconds", e["max_audio_seconds"]),
            extra_env=_str_map(f"{where}.extra_env", e["extra_env"]), secrets=secrets,
            worker_module=_match(f"{where}.worker_module", e["worker_module"], _MODULE, "a Python module path"),
            speaker_store=e["speaker_store"], blocking=e["blocking"], enabled=e["enabled"],
        )


# --- the host ---------------------------------------------------------------------------------
# host-wide knobs: name -> check (group_data/all.py documents each); the value the check returns is kept
_KNOBS: dict[str, Any] = {
    "domain": _domain,
    "cors_origin": lambda k, v: _match(k, v, re.compile(r"https?://[A-Za-z0-9.-]+(:\d+)?"), "an origin (https://name)"),
    "timezone": lambda k, v: _match(k, v, re.compile(r"[A-Za-z0-9_+/-]+"), "a tz name (Europe/Paris)"),
    "body_limit": lambda k, v: _match(k, v, _SIZE, "a size such as 500M"),
    "proxy_timeout": _positive,
    "http_port": _listen,
    "https_port": _listen,
    "listen_ipv6": lambda k, v: _type(k, v, bool),
    "htpasswd_file": _abs_path,
    "basic_auth_realm": lambda k, v: _match(k, v, re.compile(r"[^\"$\\\n]*"), "text without \", $ or \\"),
    "acme_webroot": _abs_path,
    "tls_mode": lambda k, v: _choice(k, v, TLS_MODES),
    "letsencrypt_email": lambda k, v: _match(k, v, re.compile(r"([^@\s'\"]+@[^@\s'\"]+)?"), "an email address or empty"),
    "selfsigned_dir": _abs_path,
    "docker_install": lambda k, v: _choice(k, v, DOCKER_INSTALL),
    "container_log_max_size": lambda k, v: _match(k, v, re.compile(r"[1-9]\d*[kmg]"), "a size such as 10m"),
    "container_log_max_files": _positive,
    "base_image": lambda k, v: _match(k, v, re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:@-]*"), "an image reference"),
    "build_ca_bundle": lambda k, v: _type(k, v, str),
    "seed_images": lambda k, v: MappingProxyType(dict(_type(k, v, dict))),
    "build_stall_timeout": _positive,
    "build_wheelhouse": lambda k, v: v and _abs_path(k, v) or "",
    "build_wheelhouse_port": _port,
    "nvidia_apt_repo": lambda k, v: _match(k, v, re.compile(r"([a-z][a-z0-9+.-]*:[^\s\"']+( [^\s\"']+)*)?"),
                                           "an apt repository (URI [suite components]) or empty"),
    "nvidia_apt_key": lambda k, v: _type(k, v, str),   # a file on the machine that deploys
    "hf_cache_dir": _abs_path,
    "models_dir": _abs_path,
    "model_uploads": lambda k, v: MappingProxyType(dict(_type(k, v, dict))),
    "jobs_enabled": lambda k, v: _type(k, v, bool),
    "jobs_dir": _abs_path,
    "job_ttl": _positive,
    "job_max_seconds": _positive,
    "job_retries": lambda k, v: _positive(k, v, zero=True),
    "jobs_env_file": _abs_path,
    "speakers_dir": _abs_path,
    "redis_port": _port,
    "redis_maxmemory": lambda k, v: _match(k, v, re.compile(r"\d+[kmg]?b?", re.I), "a Redis size such as 256mb"),
    "job_quota_jobs": lambda k, v: _positive(k, v, zero=True),
    "job_quota_mb": lambda k, v: _positive(k, v, zero=True),
    "jobs_max_queued": lambda k, v: _positive(k, v, zero=True),
    "jobs_max_stored_mb": lambda k, v: _positive(k, v, zero=True),
    "redis_socket_dir": _abs_path,
    "jobs_min_free_mb": lambda k, v: _positive(k, v, zero=True),
    "webhook_timeout": lambda k, v: _bounded(k, v, 1, 120),
    "link_address": lambda k, v: _ip_or_empty(k, v),
    "link_https_port": _port,
    "link_pki_dir": lambda k, v: _match(k, v, re.compile(r"[^\s\"'$;`\\]+"), "a folder on the deploying machine"),
    "backup_recipients": lambda k, v: tuple(_match(f"{k}[{i}]", r, _AGE_RECIPIENT, "an age public key (age1...)")
                                            for i, r in enumerate(_type(k, v, (list, tuple), "a list of keys"))),
    "backup_dir": _abs_path,
    "backup_schedule": lambda k, v: _match(k, v, re.compile(r"[A-Za-z0-9*:/,.~ -]{1,100}"),
                                           "a systemd OnCalendar value (daily, *-*-* 03:30:00)"),
    "backup_keep": _positive,
    "backup_uploads": lambda k, v: _type(k, v, bool),
    "backup_models": lambda k, v: _type(k, v, bool),
    "backup_push": lambda k, v: _match(k, v, re.compile(r"([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:[A-Za-z0-9._/~-]*|"),
                                       "user@host:folder or empty"),
    "backup_push_key": lambda k, v: v and _abs_path(k, v) or "",
    "backup_pull_dir": lambda k, v: _match(k, v, _LOCAL_PATH, "a folder on the deploying machine"),
    "restore_from": lambda k, v: _match(k, v, _LOCAL_PATH, "a file on the deploying machine") if v else "",
    "restore_identity": lambda k, v: _match(k, v, _LOCAL_PATH, "a file on the deploying machine") if v else "",
    "autostart_install": lambda k, v: _type(k, v, bool),
    "autostart_listen_host": lambda k, v: _match(k, v, re.compile(r"[0-9a-fA-F.:\[\]]+|localhost"), "an address"),
    "autostart_port": _port,
    "autostart_config": _abs_path,
    "autostart_idle_timeout": _positive,
    "autostart_max_wait": _positive,
    "autostart_wake_path": lambda k, v: _match(k, v, re.compile(r"(/[A-Za-z0-9._~-]+)+|"),
                                               "a path such as /_autostart/wake, or empty"),
    "monitoring_enabled": lambda k, v: _type(k, v, bool),
    "monitor_subdomain": lambda k, v: _match(k, v, _LABEL, "a DNS label"),
    "prometheus_port": _port,
    "alertmanager_port": _port,
    "node_exporter_port": _port,
    "blackbox_exporter_port": _port,
    "redis_exporter_port": _port,
    "nginx_exporter_port": _port,
    "nginx_status_port": _port,
    "prometheus_retention_time": lambda k, v: _match(k, v, _DURATION, "a duration such as 15d"),
    "prometheus_retention_size": lambda k, v: _match(k, v, _PROM_SIZE, "a size such as 512MB or 2GB"),
    "scrape_interval": lambda k, v: _match(k, v, _DURATION, "a duration such as 30s"),
    "evaluation_interval": lambda k, v: _match(k, v, _DURATION, "a duration such as 30s"),
    "alert_degraded_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 5m"),
    "alert_5xx_ratio": _ratio,
    "alert_5xx_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 10m"),
    "alert_job_age_minutes": _positive,
    "alert_no_worker_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 2m"),
    "alert_redis_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 1m"),
    "alert_disk_percent": _percent,
    "alert_cert_days": _positive,
    "alert_memory_ratio": _ratio,
    "alert_memory_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 10m"),
    "alert_webhook_failures": _positive,
    "alert_worker_host_for": lambda k, v: _match(k, v, _DURATION, "a duration such as 5m"),
    "alert_email_to": _emails,
    "alert_email_from": _emails,
    "smtp_smarthost": lambda k, v: _match(k, v, re.compile(r"([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):[0-9]+|"),
                                          "HOST:PORT of a mail relay, or empty"),
    "smtp_user": lambda k, v: _match(k, v, re.compile(r"[^\s'\"]*"), "a user name without spaces or quotes"),
    "smtp_require_tls": lambda k, v: _type(k, v, bool),
    "alert_webhook_url": lambda k, v: _match(k, v, re.compile(r"(https?://[^\s'\"]+)?"), "an http(s) URL or empty"),
    "alert_group_wait": lambda k, v: _match(k, v, _DURATION, "a duration such as 30s"),
    "alert_group_interval": lambda k, v: _match(k, v, _DURATION, "a duration such as 5m"),
    "alert_repeat_interval": lambda k, v: _match(k, v, _DURATION, "a duration such as 4h"),
    "grafana_apt_repo": lambda k, v: _match(k, v, re.compile(r"([a-z][a-z0-9+.-]*:[^\s\"']+( [^\s\"']+)*)?"),
                                            "an apt repository (URI suite components) or empty"),
    "grafana_apt_key": lambda k, v: _type(k, v, str),   # a file on the machine that deploys
    "grafana_port": _port,
    "autostart_journal_max_use": lambda k, v: _match(k, v, re.compile(r"([1-9]\d*[KMG])?"),
                                                     "a journald size such as 64M, or empty"),
    "platform_dir": _abs_path,
    "state_dir": _abs_path,
    "nginx_backup_dir": _abs_path,
    "takeover_backup_dir": _abs_path,
    "app_uid": _positive,
    "app_user": lambda k, v: _match(k, v, re.compile(r"[a-z_][a-z0-9_-]{0,31}"), "a user name"),
}


@dataclass(frozen=True)
class Platform:
    """Everything the stages read about one host, checked. Field docs: group_data/all.py."""

    services: tuple[Service, ...]
    domain: str
    cors_origin: str
    timezone: str
    body_limit: str
    proxy_timeout: int
    http_port: int | str
    https_port: int | str
    listen_ipv6: bool
    htpasswd_file: str
    basic_auth_realm: str
    acme_webroot: str
    tls_mode: str
    letsencrypt_email: str
    selfsigned_dir: str
    docker_install: str
    container_log_max_size: str    # Docker's local log driver, per container
    container_log_max_files: int
    base_image: str
    build_ca_bundle: str
    seed_images: Mapping[str, str]
    build_stall_timeout: int
    build_wheelhouse: str
    build_wheelhouse_port: int
    nvidia_apt_repo: str
    nvidia_apt_key: str
    hf_cache_dir: str
    models_dir: str
    model_uploads: Mapping[str, str]
    jobs_enabled: bool
    jobs_dir: str
    speakers_dir: str
    job_ttl: int
    job_max_seconds: int
    job_retries: int
    jobs_env_file: str
    redis_port: int
    redis_maxmemory: str
    redis_socket_dir: str     # the folder of Redis's unix socket, which the containers mount
    jobs_min_free_mb: int     # new jobs get 507 when the jobs' disk would keep less free
    job_quota_jobs: int       # per caller: jobs queued or running (0 = no limit)
    job_quota_mb: int         # per caller: MiB of audio and results kept
    jobs_max_queued: int      # per service: jobs queued or running
    jobs_max_stored_mb: int   # per service: MiB kept in its jobs folder
    webhook_timeout: int      # s: the one deadline of a webhook delivery
    link_address: str         # the front's address on the link to the worker hosts; "" = none
    link_https_port: int
    link_pki_dir: str         # on the deploying machine: the link's CA and keys
    backup_recipients: tuple[str, ...]   # the operator's age public keys; () = no scheduled backups
    backup_dir: str
    backup_schedule: str
    backup_keep: int
    backup_uploads: bool
    backup_models: bool
    backup_push: str
    backup_push_key: str
    backup_pull_dir: str      # on the deploying machine
    restore_from: str         # on the deploying machine: an archive to restore onto a fresh host
    restore_identity: str     # on the deploying machine: the age identity that decrypts it
    autostart_install: bool
    autostart_listen_host: str
    autostart_port: int
    autostart_config: str
    autostart_idle_timeout: int
    autostart_max_wait: int
    autostart_wake_path: str  # "" = off
    monitoring_enabled: bool
    monitor_subdomain: str    # monitor.<domain>
    prometheus_port: int
    alertmanager_port: int
    node_exporter_port: int
    blackbox_exporter_port: int
    redis_exporter_port: int
    nginx_exporter_port: int
    nginx_status_port: int
    prometheus_retention_time: str
    prometheus_retention_size: str
    scrape_interval: str
    evaluation_interval: str
    alert_degraded_for: str
    alert_5xx_ratio: float
    alert_5xx_for: str
    alert_job_age_minutes: int
    alert_no_worker_for: str
    alert_redis_for: str
    alert_disk_percent: int
    alert_cert_days: int
    alert_memory_ratio: float
    alert_memory_for: str
    alert_webhook_failures: int
    alert_worker_host_for: str
    alert_email_to: str
    alert_email_from: str
    smtp_smarthost: str
    smtp_user: str
    smtp_require_tls: bool
    alert_webhook_url: str
    alert_group_wait: str
    alert_group_interval: str
    alert_repeat_interval: str
    grafana_apt_repo: str
    grafana_apt_key: str
    grafana_port: int
    autostart_journal_max_use: str  # the proxy's own journal namespace's cap; "" = the host's journal
    platform_dir: str
    state_dir: str
    nginx_backup_dir: str
    takeover_backup_dir: str
    app_uid: int
    app_user: str
    all_services: tuple[Service, ...] = field(default=(), repr=False)  # the disabled ones too

    @property
    def monitor_vhost(self) -> str:
        return f"{self.monitor_subdomain}.{self.domain}"

    @property
    def http_listen_port(self) -> int:
        return _listen("http_port", self.http_port)

    @property
    def https_listen_port(self) -> int:
        return _listen("https_port", self.https_port)

    @classmethod
    def from_group_data(cls, data, **replace) -> "Platform":
        """Build and check the settings from pyinfra's host.data (or any object with attributes and
        .get), with the knobs in `replace` in place of the host's. Raises GroupDataError naming the first
        bad key."""
        def get(name):
            if name in replace:
                return replace[name]
            value = data.get(name) if hasattr(data, "get") else getattr(data, name, None)
            if value is None:
                raise GroupDataError(name, "missing (its default lives in group_data/all.py)")
            return value

        values = {name: check(name, get(name)) for name, check in _KNOBS.items()}
        for name in ("http_port", "https_port"):
            values[name] = get(name)   # nginx's listen value as written (an address may come with it)
        entries = _type("services", get("services"), (list, tuple), "a list of service entries")
        by_key = {}
        for i, entry in enumerate(entries):
            _type(f"services[{i}]", entry, dict, "a dict")
            if "key" not in entry:
                raise GroupDataError(f"services[{i}].key", "missing")
            if entry["key"] in by_key:
                raise GroupDataError(f"services[{entry['key']}]", "two entries with this key")
            by_key[entry["key"]] = entry
        for layer in ("service_overrides", "service_overrides_extra"):
            overrides = replace[layer] if layer in replace else \
                data.get(layer) if hasattr(data, "get") else getattr(data, layer, None)
            overrides = _type(layer, overrides or {}, dict)
            for key, override in overrides.items():
                if key not in by_key:
                    raise GroupDataError(f"{layer}[{key!r}]", f"no service has this key (known: {', '.join(by_key)})")
                _type(f"{layer}[{key!r}]", override, dict)
                by_key[key] = _merge(by_key[key], override)
        all_services = tuple(Service.from_entry(entry, values["domain"]) for entry in by_key.values())
        services = tuple(svc for svc in all_services if svc.enabled)
        if not services:
            raise GroupDataError("services", "no service is enabled")
        if values["monitoring_enabled"] and values["monitor_subdomain"] in {svc.subdomain for svc in services}:
            raise GroupDataError("monitor_subdomain", f"{values['monitor_subdomain']!r} is also a service's subdomain")
        if values["alert_email_to"] and not values["smtp_smarthost"]:
            raise GroupDataError("smtp_smarthost", "is empty, but alert_email_to asks for e-mail: name the mail relay")
        # one loopback port, container, project folder and vhost per service, none shared with the host's own
        host_ports = {values["autostart_port"]: "autostart_port", values["redis_port"]: "redis_port"}
        if values["monitoring_enabled"]:
            for name in MONITORING_PORTS:
                if values[name] in host_ports:
                    raise GroupDataError(name, f"{values[name]} is also {host_ports[values[name]]}")
                host_ports[values[name]] = name
        for attr in ("port", "container", "project_dir", "vhost"):
            seen: dict = {}
            for svc in services:
                value = getattr(svc, attr)
                if value in seen:
                    raise GroupDataError(f"services[{svc.key}].{attr}",
                                         f"{value!r} is also services[{seen[value]}].{attr}")
                if attr == "port" and value in host_ports:
                    raise GroupDataError(f"services[{svc.key}].port", f"{value} is also {host_ports[value]}")
                seen[value] = svc.key
        return cls(services=services, all_services=all_services, **values)

    def service(self, key: str) -> Service:
        return next(svc for svc in self.services if svc.key == key)


def read_group_data(*groups: str, **overrides) -> dict:
    """group_data as pyinfra merges it for a host in these groups: all.py, then each group's file, then
    `overrides` (as `--data` would). For tests and tools; a deploy reads pyinfra's host.data."""
    import runpy

    values: dict = {}
    for name in ("all", *groups):
        for key, value in runpy.run_path(str(REPO / "group_data" / f"{name}.py")).items():
            if not key.startswith("_") and not isinstance(value, type(runpy)) and not callable(value):
                values[key] = value
    values.update(overrides)
    return values
