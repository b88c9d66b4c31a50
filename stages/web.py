"""Stages 5 and 6: TLS certificates and the nginx vhosts in front of the autostart proxy.

Order matters on a fresh host: port-80 vhosts (ACME webroot) and a reload first, then
certificates (certbot needs the webroot served), then the TLS vhosts. `nginx -t` runs
before every reload, and nginx reloads only when one of our files changed.
"""

from __future__ import annotations

import io
import re
import shlex

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.config import REPO, services
from stages.nginx_txn import nginx_apply
from stages.ops import CommandSucceeds, htpasswd_user
from stages.secrets_env import SAFE_KEY, Secret, UnsafeSecret, api_keys

NGINX = "/etc/nginx"
TEMPLATES = REPO / "templates" / "nginx"


def nginx_regex(text: str) -> str:
    """`text` as a literal inside a double-quoted nginx regex (map keys): regex metacharacters
    escaped; refuses what nginx would read as a variable or the end of the string."""
    if any(c in text for c in "\"$\\{}\n\r;"):
        raise ValueError("refusing to put a value with \", $, \\, {, }, ; or a newline into an nginx regex")
    return re.sub(r"([.^*+?()\[\]|])", r"\\\1", text)


def _render(name: str, **values) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["nginx_regex"] = nginx_regex
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
    for key in keys:
        if not SAFE_KEY.fullmatch(key):
            raise UnsafeSecret("an API key holds characters outside the safe set (see WHISPER_API_KEY)")
    if any(c in data.basic_auth_realm for c in '"$\\'):
        raise ValueError("basic_auth_realm may not hold \", $ or \\")
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


def port_of(listen) -> int:
    """The port of a group-data listen value: 443, "443", "127.0.0.1:8443"."""
    return int(str(listen).rsplit(":", 1)[-1])


def nginx_files(data, secrets: dict, with_https: bool) -> list[dict]:
    """Every nginx file we own, as nginx_apply takes them."""
    keys = api_keys(secrets)
    out = [
        {"path": f"{NGINX}/conf.d/whisper-platform.conf", "content": render_shared(data), "mode": "644"},
        {"path": f"{NGINX}/snippets/whisper-platform-tls.conf", "content": render_tls_params(), "mode": "644"},
        # API keys absent from the environment: the host's map (and keys) stay as they are
        {"path": f"{NGINX}/conf.d/whisper-platform-auth.conf", "content": Secret(render_auth_map(data, keys or [])),
         "mode": "600", "keep_existing": keys is None},
    ]
    for svc in services(data):
        sites = [(f"{svc['vhost']}-http", render_http_vhost(svc, data))]
        if with_https:
            sites.append((svc["vhost"], render_https_vhost(svc, data)))
        for name, content in sites:
            available = f"{NGINX}/sites-available/{name}"
            out.append({"path": available, "content": content, "mode": "644"})
            out.append({"path": f"{NGINX}/sites-enabled/{name}", "link": available})
    return out


def _nginx(name: str, data, secrets: dict, with_https: bool):
    ports = [port_of(data.http_port)] + ([port_of(data.https_port)] if with_https else [])
    nginx_apply(
        name=name,
        files=nginx_files(data, secrets, with_https),
        names=[svc["vhost"] for svc in services(data)],
        ports=ports,
        backup_root=data.nginx_backup_dir,
        state_dir=data.state_dir,
    )


def _text(text: str) -> io.StringIO:
    """files.put takes a file-like object for rendered text."""
    return io.StringIO(text)


def _cert_present(cert: str) -> bool:
    # `test -f` follows links: certbot's live/<name>/*.pem are links into archive/
    return host.get_fact(CommandSucceeds, command=f"test -f {shlex.quote(cert)}")


def _certificates_present(data) -> bool:
    return all(_cert_present(cert_paths(svc, data)[0]) for svc in services(data))


@deploy("nginx: shared settings, auth, port-80 vhosts")
def nginx_base(secrets: dict):
    data = host.data
    # basic auth: our user's line in the shared htpasswd, every other line untouched
    htpasswd_user(
        name=f"basic-auth user in {data.htpasswd_file}",
        path=data.htpasswd_file, user=secrets["WHISPER_BASIC_AUTH_USER"].reveal(),
        password=secrets["WHISPER_BASIC_AUTH_PASSWORD"], staging_dir=f"{data.state_dir}/staging",
    )
    files.directory(name="ACME webroot", path=data.acme_webroot, mode="755")
    # where every certificate exists already (a host taken over), the TLS vhosts go in with the rest:
    # the hand-made blocks they replace are disabled in the same step, with no gap in between
    _nginx("nginx: our files, conflicting blocks disabled, nginx -t, reload (all or nothing)", data, secrets,
           with_https=_certificates_present(data))


@deploy("TLS certificates")
def certificates():
    data = host.data
    if data.tls_mode == "selfsigned":
        files.directory(name="Self-signed certificate folder", path=data.selfsigned_dir, mode="755")
    for svc in services(data):
        cert, key = cert_paths(svc, data)
        vhost = svc["vhost"]
        if _cert_present(cert):
            # existing certificates are reused as long as they are valid for another day
            if host.get_fact(CommandSucceeds, command=f"openssl x509 -checkend 86400 -noout -in {shlex.quote(cert)}"):
                continue
            if data.tls_mode == "letsencrypt":
                server.shell(name=f"Renew the expiring certificate of {vhost}",
                             commands=[f"certbot renew --cert-name {shlex.quote(vhost)} --non-interactive"])
                continue
        if data.tls_mode == "selfsigned":
            server.shell(name=f"Self-signed certificate for {vhost}", commands=[
                f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN={vhost} "
                f"-addext subjectAltName=DNS:{vhost} -keyout {key} -out {cert} 2>/dev/null",
                f"chmod 600 {key}",
            ])
        elif data.tls_mode == "letsencrypt":
            email = f"-m {shlex.quote(data.letsencrypt_email)}" if data.letsencrypt_email else "--register-unsafely-without-email"
            server.shell(name=f"Let's Encrypt certificate for {vhost}", commands=[
                f"certbot certonly --webroot -w {data.acme_webroot} -d {vhost} --non-interactive --agree-tos {email}"
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
def nginx_vhosts(secrets: dict):
    data = host.data
    if _certificates_present(data):
        return  # the first nginx step already had every certificate and wrote the TLS vhosts
    _nginx("nginx: TLS vhosts, conflicting blocks disabled, nginx -t, reload (all or nothing)", data, secrets,
           with_https=True)
