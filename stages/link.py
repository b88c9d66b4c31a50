"""The link between the front host and its worker hosts (issue 14): Redis over mutual TLS plus a Redis user and
password per worker host, and the jobs' audio over HTTPS (nginx on the front, the same client certificates).

Why TLS and not WireGuard: a WireGuard interface needs the kernel module, which the hosts the platform runs
on do not all have (this test machine's kernel has none: `ip link add wg0 type wireguard` answers "Unknown device
type" even with every capability), while Debian's redis-server and nginx speak TLS everywhere. Two ports, each
bound to the front's `link_address` only, each refusing a client without a certificate of the link's own CA.

The CA and every host's key are made on the machine that runs the deploy (like its SSH keys), in
`link_pki_dir` (0700; the sandbox's is .sandbox/link): a worker host's key and Redis password go to that host
only, the front gets its server key and each worker's password as a SHA-256 hash (Redis ACL `#<hash>`). A host
removed from the `workers` group loses its Redis user at the next deploy: Redis closes its connections and
refuses it from then on, so it takes no more jobs (a job it was running is retried elsewhere once its heartbeat
lapses). Nothing is printed: keys and passwords are uploaded with stages.ops.secret_file.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets as random
import shlex
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.ops import CommandSucceeds, secret_file
from stages.redis import socket_path
from stages.secrets_env import Secret
from stages.settings import REPO, Platform

REDIS_LINK_CONF = "/etc/redis/whisper-platform-link.conf"
REDIS_USERS_CONF = "/etc/redis/whisper-platform-workers.conf"
REDIS_LINK_DIR = "/etc/redis/link"
NGINX_LINK_CONF = "/etc/nginx/conf.d/whisper-platform-link.conf"
# what a worker host's Redis user may do: RQ's commands, not the server's administration
WORKER_ACL = "~* &* +@all -@admin -flushall -flushdb -keys -debug -shutdown -config -acl -module -monitor"


def worker_hosts() -> list:
    return list(inventory.get_group("workers", []))


def redis_user(name: str) -> str:
    return f"worker-{name}"


# --- the PKI, on the machine that runs the deploy -----------------------------------------------------------
def pki_dir(folder: str | None) -> Path:
    """The deploying machine's folder of the link's CA and keys (group_data link_pki_dir), made 0700."""
    path = Path(folder or "~/.local/share/whisper-platform/link").expanduser()
    if not path.is_absolute():
        path = REPO / path
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ca(folder: Path):
    """The link's CA (10 years), made once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    crt, key_path = folder / "ca.crt", folder / "ca.key"
    if not crt.exists():
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whisper-platform link CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, _pem_key(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return cert, key


def issue(folder: Path, name: str, server_address: str | None = None) -> tuple[str, Secret]:
    """A host's certificate and key (made once; a server one again when its address changed): (cert PEM, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    crt, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    if crt.exists() and server_address:
        sans = x509.load_pem_x509_certificate(crt.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        if ipaddress.ip_address(server_address) not in sans.get_values_for_type(x509.IPAddress):
            crt.unlink()
    if not crt.exists():
        ca_cert, ca_key = ca(folder)
        key = _new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server_address:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(server_address))]), critical=False) \
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                            critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(key_path, _pem_key(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt.read_text(), Secret(key_path.read_text())


def worker_password(folder: Path, name: str) -> Secret:
    path = folder / f"{name}.redis-password"
    if not path.exists():
        _write_private(path, random.token_hex(24).encode())
    return Secret(path.read_text().strip())


def password_hash(password: Secret) -> str:
    return hashlib.sha256(password.reveal().encode()).hexdigest()


# --- the front host's side ----------------------------------------------------------------------------------
def acl_sync_command(jobs_env_file: str, socket: str) -> str:
    """Make Redis's live users match the users file: drop worker users no longer in it (Redis closes their
    connections), (re)define the others. The admin password is read from the host's file, never in argv."""
    q = shlex.quote(jobs_env_file)
    users = shlex.quote(REDIS_USERS_CONF)
    return (
        f"export REDISCLI_AUTH=\"$(sed -n 's/^REDIS_PASSWORD=//p' {q})\"; "
        f"cli='redis-cli --no-auth-warning -s {shlex.quote(socket)}'; "
        "for u in $($cli ACL USERS | grep '^worker-'); do "
        f"grep -q \"^user $u \" {users} 2>/dev/null || $cli ACL DELUSER \"$u\" >/dev/null; done; "
        f"if [ -f {users} ]; then grep '^user ' {users} | while read -r _ name rules; do "
        "$cli ACL SETUSER \"$name\" reset $rules >/dev/null; done; fi"
    )


@deploy("Link to the worker hosts (Redis TLS, audio over HTTPS)")
def front_link(p: Platform):
    """On the front host: Redis's TLS port and the workers' users, nginx's audio server; all of it removed again
    when the inventory has no worker hosts."""
    workers = worker_hosts()
    if not workers:
        # no worker hosts (any more): the single-host setup, as before the link
        present = host.get_fact(CommandSucceeds, command=f"test -e {REDIS_LINK_CONF}")
        if not present:
            return
        server.shell(name="Redis: drop the link's include (no worker hosts)",
                     commands=[f"sed -i '\\#^include {REDIS_LINK_CONF}$#d; \\#^include {REDIS_USERS_CONF}$#d' "
                               "/etc/redis/redis.conf",
                               f"rm -rf {REDIS_LINK_CONF} {REDIS_USERS_CONF} {NGINX_LINK_CONF} {REDIS_LINK_DIR}",
                               "systemctl restart redis-server",
                               "nginx -t && systemctl reload nginx"])
        return
    address = p.link_address
    if not address:
        raise ValueError(f"{host.name}: the inventory has worker hosts but no link_address for the front")
    folder = pki_dir(p.link_pki_dir)
    ca_pem = ca(folder)[0]
    from cryptography.hazmat.primitives import serialization
    ca_text = ca_pem.public_bytes(serialization.Encoding.PEM).decode()
    cert, key = issue(folder, host.name, server_address=address)

    # setgid like /etc/redis (2770): what the folder gets anyway, so a second run changes nothing
    files.directory(name="Link certificates folder", path=REDIS_LINK_DIR, user="root", group="redis", mode="2750")
    changed = [
        files.put(name="Link CA certificate", src=_text(ca_text), dest=f"{REDIS_LINK_DIR}/ca.crt", mode="644"),
        files.put(name="Front link certificate", src=_text(cert), dest=f"{REDIS_LINK_DIR}/server.crt", mode="644"),
        secret_file(name="Front link key (secret)", path=f"{REDIS_LINK_DIR}/server.key", content=key,
                    staging_dir=f"{p.state_dir}/staging", mode="640", user="root", group="redis"),
        files.template(name="Redis: TLS port on the link", src=str(REPO / "templates/redis/link.conf.j2"),
                       dest=REDIS_LINK_CONF, mode="644", link_address=address,
                       link_redis_port=p.link_redis_port, link_dir=REDIS_LINK_DIR),
    ]
    users = files.template(
        name="Redis: one user per worker host (password hashes)", src=str(REPO / "templates/redis/workers.conf.j2"),
        dest=REDIS_USERS_CONF, mode="640", user="root", group="redis",
        users=[(redis_user(w.name), password_hash(worker_password(folder, w.name))) for w in workers],
        acl=WORKER_ACL)
    includes = [files.line(name=f"redis.conf includes {path}", path="/etc/redis/redis.conf", line=f"include {path}")
                for path in (REDIS_LINK_CONF, REDIS_USERS_CONF)]
    restart = server.shell(name="Restart Redis (its TLS settings changed)",
                           commands=["systemctl restart redis-server"],
                           _if=lambda: any(op.did_change() for op in changed + includes))
    server.shell(name="Redis: worker users as in the inventory (a removed host is disconnected)",
                 commands=[acl_sync_command(p.jobs_env_file, socket_path(p))],
                 _if=lambda: users.did_change() and not restart.did_change())
    vhosts = {svc.key: svc.vhost for svc in p.services}
    nginx = files.template(name="nginx: the jobs' audio for the worker hosts, on the link only",
                           src=str(REPO / "templates/nginx/link.conf.j2"), dest=NGINX_LINK_CONF, mode="644",
                           link_address=address, link_https_port=p.link_https_port, link_dir=REDIS_LINK_DIR,
                           vhosts=vhosts, autostart_host=p.autostart_listen_host,
                           autostart_port=p.autostart_port)
    server.shell(name="nginx: reload for the link (after nginx -t)", commands=["nginx -t", "systemctl reload nginx"],
                 _if=lambda: nginx.did_change() or any(op.did_change() for op in changed[:3]))


def _text(text: str):
    import io
    return io.StringIO(text)

