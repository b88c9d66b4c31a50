"""Stages "nginx base", "certificates" and "nginx vhosts": TLS certificates and the nginx vhosts in
front of the autostart proxy.

Order matters on a fresh host: port-80 vhosts (ACME webroot) and a reload first, then
certificates (certbot needs the webroot served), then the TLS vhosts. `nginx -t` runs
before every reload, and nginx reloads only when one of our files changed. A retired service's
vhost files (ours only: they carry our marker) are removed in the first step; its certificate stays.
"""

from __future__ import annotations

import re
import shlex
from types import SimpleNamespace
from typing import Callable, cast

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Link
from pyinfra.operations import files, server

from stages import marker
from stages.identity import PROXY_KEY_CONF
from stages.nginx_txn import nginx_apply
from stages.ops import CommandSucceeds, htpasswd_user, render_template, text_source
from stages.restoring import certificate_valid_for, restored, restored_htpasswd
from stages.retired import retired_services
from stages.secrets_env import SAFE_KEY, Secret, UnsafeSecret, api_keys
from stages.settings import REPO, Platform, ServiceEntry

NGINX = "/etc/nginx"
AUTH_MAP = f"{NGINX}/conf.d/whisper-platform-auth.conf"   # holds the API keys
TEMPLATES = REPO / "templates" / "nginx"


def nginx_regex(text: str) -> str:
    """`text` as a literal inside a double-quoted nginx regex (map keys): regex metacharacters
    escaped; refuses what nginx would read as a variable or the end of the string."""
    if any(c in text for c in "\"$\\{}\n\r;"):
        raise ValueError("refusing to put a value with \", $, \\, {, }, ; or a newline into an nginx regex")
    return re.sub(r"([.^*+?()\[\]|])", r"\\\1", text)


def _render(name: str, **values) -> str:
    return render_template(TEMPLATES / name, filters={"nginx_regex": nginx_regex}, **values)


def cert_paths(svc: ServiceEntry, p: Platform) -> tuple[str, str]:
    if p.tls_mode == "letsencrypt":
        live = f"/etc/letsencrypt/live/{svc.vhost}"
        return f"{live}/fullchain.pem", f"{live}/privkey.pem"
    return f"{p.selfsigned_dir}/{svc.vhost}.crt", f"{p.selfsigned_dir}/{svc.vhost}.key"


def monitor_site(p: Platform):
    """The monitor.<domain> vhost as the certificate and port-80 steps see a site (a name and a vhost)."""
    return SimpleNamespace(name="Monitoring (Prometheus, Alertmanager)", vhost=p.monitor_vhost)


def sites(p: Platform) -> list:
    """Every vhost of ours that needs a certificate: the services', and the monitoring page's."""
    return list(p.services) + ([monitor_site(p)] if p.monitoring_enabled else [])


def render_shared(p: Platform) -> str:
    return _render("whisper-platform.conf.j2", cors_origin=p.cors_origin, vhosts=[s.vhost for s in p.services])


def render_tls_params() -> str:
    return _render("tls-params.conf.j2")


def render_auth_map(p: Platform, keys: list[str], proxy_key_conf: str = PROXY_KEY_CONF) -> str:
    """`proxy_key_conf`: the file of the proxy key's map line (stages/identity.py; tests point it elsewhere)."""
    for key in keys:
        if not SAFE_KEY.fullmatch(key):
            raise UnsafeSecret("an API key holds characters outside the safe set (see WHISPER_API_KEY)")
    return _render("auth-map.conf.j2", api_keys=keys, realm=p.basic_auth_realm, proxy_key_conf=proxy_key_conf)


def render_http_vhost(svc: ServiceEntry, p: Platform) -> str:
    return _render("vhost-http.conf.j2", svc=svc, http_port=p.http_port, listen_ipv6=p.listen_ipv6,
                   acme_webroot=p.acme_webroot)


def render_https_vhost(svc: ServiceEntry, p: Platform) -> str:
    cert, key = cert_paths(svc, p)
    return _render(
        "vhost-https.conf.j2", svc=svc, https_port=p.https_port, listen_ipv6=p.listen_ipv6,
        cert=cert, key=key, body_limit=p.body_limit, htpasswd_file=p.htpasswd_file,
        autostart_host=p.autostart_listen_host, autostart_port=p.autostart_port,
        proxy_timeout=p.proxy_timeout,
    )


def render_monitor_vhost(p: Platform) -> str:
    cert, key = cert_paths(monitor_site(p), p)
    return _render("vhost-monitor.conf.j2", vhost=p.monitor_vhost, https_port=p.https_port,
                   listen_ipv6=p.listen_ipv6, cert=cert, key=key, realm=p.basic_auth_realm,
                   htpasswd_file=p.htpasswd_file, prometheus_port=p.prometheus_port,
                   alertmanager_port=p.alertmanager_port, grafana_port=p.grafana_port if p.grafana_apt_repo else 0)


def render_status(p: Platform) -> str:
    return _render("status.conf.j2", status_port=p.nginx_status_port)


STATUS_CONF = f"{NGINX}/conf.d/whisper-platform-status.conf"


def monitoring_files(p: Platform, with_https: bool) -> list[dict]:
    """nginx_apply's items for the monitoring stage: stub_status on loopback and the monitor.<domain> vhost."""
    if not p.monitoring_enabled:
        return []
    site = monitor_site(p)
    out = [{"path": STATUS_CONF, "content": render_status(p), "mode": "644"}]
    pages = [(f"{site.vhost}-http", render_http_vhost(site, p))]
    if with_https:
        pages.append((site.vhost, render_monitor_vhost(p)))
    for name, content in pages:
        available = f"{NGINX}/sites-available/{name}"
        out.append({"path": available, "content": content, "mode": "644"})
        out.append({"path": f"{NGINX}/sites-enabled/{name}", "link": available})
    return out


def nginx_files(p: Platform, env_secrets: dict, with_https: bool) -> list[dict]:
    """Every nginx file we own, as nginx_apply takes them."""
    keys = api_keys(env_secrets)
    out: list[dict] = [
        {"path": f"{NGINX}/conf.d/whisper-platform.conf", "content": render_shared(p), "mode": "644"},
        {"path": f"{NGINX}/snippets/whisper-platform-tls.conf", "content": render_tls_params(), "mode": "644"},
        # API keys absent from the environment: the host's map (and keys) stay as they are
        {"path": AUTH_MAP, "content": Secret(render_auth_map(p, keys or [])),
         "mode": "600", "keep_existing": keys is None},
    ]
    for svc in p.services:
        sites = [(f"{svc.vhost}-http", render_http_vhost(svc, p))]
        if with_https:
            sites.append((svc.vhost, render_https_vhost(svc, p)))
        for name, content in sites:
            available = f"{NGINX}/sites-available/{name}"
            out.append({"path": available, "content": content, "mode": "644"})
            out.append({"path": f"{NGINX}/sites-enabled/{name}", "link": available})
    return out + monitoring_files(p, with_https)


def retired_vhost_files(svc: ServiceEntry, owned: Callable[[str], bool], link_target: Callable[[str], str | None]) -> list[dict]:
    """nginx_apply's "absent" items for a retired service's vhosts: only the files we wrote
    (`owned(path)`: the file holds our marker) and the sites-enabled links pointing at them."""
    out = []
    for name in (f"{svc.vhost}-http", svc.vhost):
        available = f"{NGINX}/sites-available/{name}"
        if not owned(available):
            continue
        enabled = f"{NGINX}/sites-enabled/{name}"
        if link_target(enabled) == available:
            out.append({"path": enabled, "absent": True})
        out.append({"path": available, "absent": True})
    return out


def _retired_files(p: Platform) -> list[dict]:
    out = []
    # named after one of our vhosts, so the first versions' generic "Managed by pyinfra" counts here too
    owned = lambda path: host.get_fact(CommandSucceeds, command=marker.owned_command(path, generic=True))  # noqa: E731
    link_target = lambda path: cast(dict, host.get_fact(Link, path=path) or {}).get("link_target")  # noqa: E731
    for svc in retired_services(p):
        out += retired_vhost_files(svc, owned=owned, link_target=link_target)
    if not p.monitoring_enabled:   # monitoring turned off: its vhost and stub_status leave too
        out += retired_vhost_files(monitor_site(p), owned=owned, link_target=link_target)
        if owned(STATUS_CONF):
            out.append({"path": STATUS_CONF, "absent": True})
    return out


def _nginx(name: str, p: Platform, env_secrets: dict, with_https: bool, retire: bool = False):
    ports = [p.http_listen_port] + ([p.https_listen_port] if with_https else [])
    nginx_apply(
        name=name,
        files=nginx_files(p, env_secrets, with_https) + (_retired_files(p) if retire else []),
        names=[site.vhost for site in sites(p)],
        ports=ports,
        backup_root=p.nginx_backup_dir,
        state_dir=p.state_dir,
    )



def _cert_present(cert: str) -> bool:
    # `test -f` follows links: certbot's live/<name>/*.pem are links into archive/; a restore from a backup
    # puts it back earlier in this run (stages.restoring)
    return restored(cert) is not None or host.get_fact(CommandSucceeds, command=f"test -f {shlex.quote(cert)}")


def _cert_valid_for_a_day(cert: str) -> bool:
    pem = restored(cert)
    if pem is not None:
        return certificate_valid_for(pem, 86400)
    return host.get_fact(CommandSucceeds, command=f"openssl x509 -checkend 86400 -noout -in {shlex.quote(cert)}")


def _certificates_present(p: Platform) -> bool:
    return all(_cert_present(cert_paths(site, p)[0]) for site in sites(p))


@deploy("nginx: shared settings, auth, port-80 vhosts")
def nginx_base(p: Platform, env_secrets: dict):
    # basic auth: our user's line in the shared htpasswd, every other line untouched
    user = env_secrets["WHISPER_BASIC_AUTH_USER"].reveal()
    htpasswd_user(
        name=f"basic-auth user in {p.htpasswd_file}",
        path=p.htpasswd_file, user=user, password=env_secrets["WHISPER_BASIC_AUTH_PASSWORD"],
        staging_dir=f"{p.state_dir}/staging", restored_line=restored_htpasswd(p.htpasswd_file, user),
    )
    files.directory(name="ACME webroot", path=p.acme_webroot, mode="755")
    # where every certificate exists already (a host taken over), the TLS vhosts go in with the rest:
    # the hand-made blocks they replace are disabled in the same step, with no gap in between
    # a retired service's vhosts (services[...].enabled False) leave in the same step
    _nginx("nginx: our files, conflicting blocks disabled, retired vhosts removed, nginx -t, reload (all or nothing)",
           p, env_secrets, with_https=_certificates_present(p), retire=True)


@deploy("TLS certificates")
def certificates(p: Platform):
    if p.tls_mode == "selfsigned":
        files.directory(name="Self-signed certificate folder", path=p.selfsigned_dir, mode="755")
    for svc in sites(p):
        cert, key = cert_paths(svc, p)
        vhost = svc.vhost
        if _cert_present(cert):
            # existing certificates are reused as long as they are valid for another day
            if _cert_valid_for_a_day(cert):
                continue
            if p.tls_mode == "letsencrypt":
                server.shell(name=f"Renew the expiring certificate of {vhost}",
                             commands=[f"certbot renew --cert-name {shlex.quote(vhost)} --non-interactive"])
                continue
        if p.tls_mode == "selfsigned":
            server.shell(name=f"Self-signed certificate for {vhost}", commands=[
                f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN={vhost} "
                f"-addext subjectAltName=DNS:{vhost} -keyout {key} -out {cert} 2>/dev/null",
                f"chmod 600 {key}",
            ])
        else:  # letsencrypt (the only other tls_mode stages.settings accepts)
            email = f"-m {shlex.quote(p.letsencrypt_email)}" if p.letsencrypt_email else "--register-unsafely-without-email"
            server.shell(name=f"Let's Encrypt certificate for {vhost}", commands=[
                f"certbot certonly --webroot -w {p.acme_webroot} -d {vhost} --non-interactive --agree-tos {email}"
            ])
    if p.tls_mode == "letsencrypt":
        files.put(
            name="certbot renewal hook: reload nginx",
            src=text_source("#!/bin/sh\n# whisper-platform: reload nginx after a renewal\nnginx -t && systemctl reload nginx\n"),
            dest="/etc/letsencrypt/renewal-hooks/deploy/whisper-platform-reload-nginx.sh", mode="755",
        )


@deploy("nginx: TLS vhosts")
def nginx_vhosts(p: Platform, env_secrets: dict):
    if _certificates_present(p):
        return  # the first nginx step already had every certificate and wrote the TLS vhosts
    _nginx("nginx: TLS vhosts, conflicting blocks disabled, nginx -t, reload (all or nothing)", p, env_secrets,
           with_https=True)
