"""Stages 5 and 6: TLS certificates and the nginx vhosts in front of the autostart proxy.

Order matters on a fresh host: port-80 vhosts (ACME webroot) and a reload first, then
certificates (certbot needs the webroot served), then the TLS vhosts. `nginx -t` runs
before every reload, and nginx reloads only when one of our files changed.
"""

from __future__ import annotations

import io
import re
import shlex

import bcrypt
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from stages.config import REPO, services
from stages.ops import HtpasswdEntry, htpasswd_line, secret_file
from stages.secrets_env import Secret, api_keys

NGINX = "/etc/nginx"
TEMPLATES = REPO / "templates" / "nginx"


def bearer_regex(key: str) -> str:
    """An API key as the literal part of nginx's case-sensitive `~^Bearer <key>$` (auth-map.conf.j2).
    Keys are RFC 6750 tokens, the only thing a client can send after "Bearer "; of those only . and +
    mean something to a regex, so a class ([.]) quotes them without a backslash for nginx to parse."""
    if not re.fullmatch(r"[A-Za-z0-9._~+/-]+=*", key):
        raise ValueError("WHISPER_API_KEY: a key holds only letters, digits and - . _ ~ + / (then = padding)")
    return re.sub(r"([.+])", r"[\1]", key)


def _render(name: str, **values) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["bearer_regex"] = bearer_regex
    return env.get_template(name).render(**values)


def cert_paths(svc: dict, data) -> tuple[str, str]:
    if data.tls_mode == "letsencrypt":
        live = f"/etc/letsencrypt/live/{svc['vhost']}"
        return f"{live}/fullchain.pem", f"{live}/privkey.pem"
    return f"{data.selfsigned_dir}/{svc['vhost']}.crt", f"{data.selfsigned_dir}/{svc['vhost']}.key"


def render_shared(data) -> str:
    return _render("whisper-platform.conf.j2", cors_origin=data.cors_origin)


def render_tls_params() -> str:
    return _render("tls-params.conf.j2")


def render_auth_map(data, keys: list[str]) -> str:
    return _render("auth-map.conf.j2", api_keys=keys, realm=data.basic_auth_realm)


def render_http_vhost(svc: dict, data) -> str:
    return _render("vhost-http.conf.j2", svc=svc, http_port=data.http_port, listen_ipv6=data.listen_ipv6,
                   acme_webroot=data.acme_webroot)


def render_https_vhost(svc: dict, data) -> str:
    cert, key = cert_paths(svc, data)
    return _render(
        "vhost-https.conf.j2", svc=svc, https_port=data.https_port, listen_ipv6=data.listen_ipv6,
        cert=cert, key=key, body_limit=data.body_limit, htpasswd_file=data.htpasswd_file,
        autostart_host=data.autostart_listen_host, autostart_port=data.autostart_port,
        proxy_timeout=int(data.proxy_timeout),
    )


def htpasswd_update(current: str | None, user: str, password: str) -> str | None:
    """The htpasswd text with `user`'s line set to a bcrypt hash of `password`; every other
    line byte-for-byte. None when the existing line already matches the password."""
    lines = (current or "").splitlines(keepends=True)
    prefix = f"{user}:"
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            stored = line[len(prefix):].strip()
            try:
                if bcrypt.checkpw(password.encode(), stored.replace("$2y$", "$2b$", 1).encode()):
                    return None
            except ValueError:
                pass  # not a bcrypt hash (apr1, sha): replace it
            lines[i] = prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode() + "\n"
            return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode() + "\n")
    return "".join(lines)


def _reload(name: str, changed_ops):
    server.shell(
        name=name,
        commands=["nginx -t", "systemctl reload nginx"],
        _if=lambda: any(op.did_change() for op in changed_ops),
    )


def _site(name: str, content: str, changed: list):
    available = f"{NGINX}/sites-available/{name}"
    changed.append(files.put(name=f"nginx site {name}", src=_text(content), dest=available, mode="644"))
    changed.append(files.link(name=f"enable nginx site {name}", path=f"{NGINX}/sites-enabled/{name}", target=available))


def _text(text: str) -> io.StringIO:
    """files.put takes a file-like object for rendered text."""
    return io.StringIO(text)


@deploy("nginx: shared settings, auth, port-80 vhosts")
def nginx_base(secrets: dict[str, Secret]):
    data = host.data
    changed = []
    changed.append(files.put(
        name="nginx http-level settings",
        src=_text(render_shared(data)),
        dest=f"{NGINX}/conf.d/whisper-platform.conf", mode="644",
    ))
    changed.append(files.put(
        name="nginx TLS parameters",
        src=_text(render_tls_params()),
        dest=f"{NGINX}/snippets/whisper-platform-tls.conf", mode="644",
    ))
    changed.append(secret_file(
        name="nginx auth map (API keys)",
        path=f"{NGINX}/conf.d/whisper-platform-auth.conf",
        content=Secret(render_auth_map(data, api_keys(secrets))),
        staging_dir=f"{data.state_dir}/staging",
    ))
    # basic auth: our user's line in the shared htpasswd, every other line untouched
    user, password = secrets["WHISPER_BASIC_AUTH_USER"].reveal(), secrets["WHISPER_BASIC_AUTH_PASSWORD"].reveal()
    if ":" in user or not user.strip():
        raise ValueError("WHISPER_BASIC_AUTH_USER must be a non-empty name without ':'")
    # only our line and the file's sha256 leave the host (never other sites' hashes); merged there
    entry = host.get_fact(HtpasswdEntry, path=data.htpasswd_file, user=user)
    updated = htpasswd_update(entry and entry["line"], user, password)
    existing = host.get_fact(File, path=data.htpasswd_file)
    mode, owner, group = ("640", "root", "www-data")
    if existing:  # keep the owner and mode the host chose for its shared file
        mode, owner, group = str(existing["mode"]), existing["user"], existing["group"]
    if updated is not None:
        changed.append(htpasswd_line(
            name=f"basic-auth user in {data.htpasswd_file}",
            path=data.htpasswd_file, user=user, line=Secret(updated), expected_sha256=entry and entry["sha256"],
            mode=mode, owner=owner, group=group, staging_dir=f"{data.state_dir}/staging",
        ))
    files.directory(name="ACME webroot", path=data.acme_webroot, mode="755")
    for svc in services(data):
        _site(f"{svc['vhost']}-http", render_http_vhost(svc, data), changed)
    _reload("nginx -t and reload (base, port 80)", changed)


@deploy("TLS certificates")
def certificates():
    data = host.data
    if data.tls_mode == "selfsigned":
        files.directory(name="Self-signed certificate folder", path=data.selfsigned_dir, mode="755")
    for svc in services(data):
        cert, key = cert_paths(svc, data)
        if host.get_fact(File, path=cert):
            continue  # existing certificates are reused, never re-issued
        if data.tls_mode == "selfsigned":
            vhost = svc["vhost"]
            server.shell(name=f"Self-signed certificate for {vhost}", commands=[
                f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN={vhost} "
                f"-addext subjectAltName=DNS:{vhost} -keyout {key} -out {cert} 2>/dev/null",
                f"chmod 600 {key}",
            ])
        elif data.tls_mode == "letsencrypt":
            email = f"-m {shlex.quote(data.letsencrypt_email)}" if data.letsencrypt_email else "--register-unsafely-without-email"
            server.shell(name=f"Let's Encrypt certificate for {svc['vhost']}", commands=[
                f"certbot certonly --webroot -w {data.acme_webroot} -d {svc['vhost']} --non-interactive --agree-tos {email}"
            ])
        else:
            raise ValueError(f"tls_mode must be letsencrypt or selfsigned, not {data.tls_mode!r}")
    if data.tls_mode == "letsencrypt":
        files.put(
            name="certbot renewal hook: reload nginx",
            src=_text("#!/bin/sh\n# whisper-platform: reload nginx after a renewal\nnginx -t && systemctl reload nginx\n"),
            dest="/etc/letsencrypt/renewal-hooks/deploy/whisper-platform-reload-nginx.sh", mode="755",
        )


@deploy("nginx: TLS vhosts")
def nginx_vhosts():
    data = host.data
    changed = []
    for svc in services(data):
        _site(svc["vhost"], render_https_vhost(svc, data), changed)
    _reload("nginx -t and reload (vhosts)", changed)
