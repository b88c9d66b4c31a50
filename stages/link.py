"""The link between the front host and its worker hosts: HTTPS only, nginx on the front's link address, a TLS
client certificate of the link's own CA (pinned: only the current worker hosts' certificates pass), and a token
per worker host for the front's narrow job interface (stt_common/jobs/link.py). A worker host has no Redis access
at all: it takes jobs, fetches their audio, reports progress and hands in results through that interface, each
job a lease bound to the host.

Why TLS and not WireGuard: a WireGuard interface needs the kernel module, which the hosts the platform runs
on do not all have (a kernel without it answers `ip link add wg0 type wireguard` with "Unknown device type" even
with every capability, and a container cannot load it), while nginx speaks TLS everywhere.

The CA, every host's key and every worker host's token are made on the machine that runs the deploy (like its
SSH keys), in `link_pki_dir` (0700; the sandbox's is .sandbox/link): a worker host's key and token go to that host
only; the front gets its server key, the SHA-1 fingerprints of the worker hosts' certificates (nginx's map) and
a SHA-256 hash of each token (LINK_WORKERS_FILE, read by the services). A host removed from the `workers` group
loses both at the next deploy: nginx refuses its certificate, the front refuses its token (re-read without a
restart), so it takes no more jobs (a job it was running is retried elsewhere once its beats stop). The front's
relays (one per worker-host slot: `relays`) are the services' stand-ins for those slots. Nothing secret is
printed: keys and tokens are uploaded as secrets (stages.ops.secret_file; the front's key inside nginx's
transaction, stages.nginx_txn).

Earlier versions gave each worker host a Redis user over Redis's TLS port; `front_link` removes that setup
(the Redis includes, users and certificates) where it finds it.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets as random
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.nginx_txn import nginx_apply
from stages.ops import CommandSucceeds, render_template, text_source
from stages.secrets_env import Secret
from stages.settings import REPO, Platform, WorkerHost

NGINX_LINK_CONF = "/etc/nginx/conf.d/whisper-platform-link.conf"
NGINX_LINK_DIR = "/etc/nginx/whisper-platform-link"    # the front's link certificate and key, the CA
NGINX_LINK_FILES = tuple(f"{NGINX_LINK_DIR}/{name}" for name in ("ca.crt", "server.crt", "server.key"))
# the worker hosts' token hashes, for the services (mounted read-only into their containers as a folder, so that
# a rewrite of the file is seen without a restart)
LINK_WORKERS_DIR = "/etc/whisper-platform/link-workers"
LINK_WORKERS_FILE = f"{LINK_WORKERS_DIR}/workers"
CONTAINER_WORKERS_FILE = "/link-workers/workers"
# what earlier versions set up for the worker hosts in Redis (removed by front_link)
OLD_REDIS_LINK_CONF = "/etc/redis/whisper-platform-link.conf"
OLD_REDIS_USERS_CONF = "/etc/redis/whisper-platform-workers.conf"
OLD_REDIS_LINK_DIR = "/etc/redis/link"


def worker_hosts() -> list:
    return list(inventory.get_group("workers", []))


def relays(service_key: str, hosts=None) -> int:
    """How many relay processes the front runs for a service: one per worker-host slot that takes its jobs."""
    total = 0
    for w in worker_hosts() if hosts is None else hosts:
        knobs = WorkerHost.from_group_data(w.data)
        if service_key in knobs.services:
            total += knobs.concurrency
    return total


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


def worker_token(folder: Path, name: str) -> Secret:
    """A worker host's token for the front's job interface (made once, kept with the host's key)."""
    path = folder / f"{name}.link-token"
    if not path.exists():
        _write_private(path, random.token_urlsafe(32).encode())
    return Secret(path.read_text().strip())


def token_hash(token: Secret) -> str:
    return hashlib.sha256(token.reveal().encode()).hexdigest()


def cert_fingerprint(cert_pem: str) -> str:
    """nginx's $ssl_client_fingerprint of a certificate: SHA-1 of its DER, lowercase hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(cert_pem.encode()).fingerprint(hashes.SHA1()).hex()


def workers_file_text(entries: list[tuple[str, str]]) -> str:
    """LINK_WORKERS_FILE: "<host> <sha256 of its token>" per line."""
    lines = ["# worker hosts allowed on the link (stages/link.py): host, SHA-256 of its token"]
    return "\n".join(lines + [f"{name} {digest}" for name, digest in entries]) + "\n"


# --- the front host's side ----------------------------------------------------------------------------------
def remove_old_redis_link() -> None:
    """Redis's TLS port and the worker hosts' Redis users of earlier versions: gone (Redis restarted once)."""
    if not host.get_fact(CommandSucceeds, command=f"test -e {OLD_REDIS_LINK_CONF} -o -e {OLD_REDIS_USERS_CONF}"):
        return
    server.shell(name="Redis: remove the worker hosts' Redis access of earlier versions (TLS port, users)",
                 commands=[f"sed -i '\\#^include {OLD_REDIS_LINK_CONF}$#d; \\#^include {OLD_REDIS_USERS_CONF}$#d' "
                           "/etc/redis/redis.conf",
                           f"rm -rf {OLD_REDIS_LINK_CONF} {OLD_REDIS_USERS_CONF} {OLD_REDIS_LINK_DIR}",
                           "systemctl restart redis-server"])


@deploy("Link to the worker hosts (their job interface over HTTPS)")
def front_link(p: Platform):
    """On the front host: the worker hosts' token hashes for the services, nginx's link server with their pinned
    certificates; the server removed again when the inventory has no worker hosts."""
    remove_old_redis_link()
    workers = worker_hosts()
    if p.jobs_enabled:
        files.directory(name="Worker hosts' token hashes folder (read by the services)", path=LINK_WORKERS_DIR,
                        user="root", group=p.app_user, mode="750")
    if not workers:
        if p.jobs_enabled:
            files.put(name="No worker host on the link", src=text_source(workers_file_text([])), dest=LINK_WORKERS_FILE,
                      user="root", group=p.app_user, mode="640")
        if not host.get_fact(CommandSucceeds, command=f"test -e {NGINX_LINK_CONF} -o -e {NGINX_LINK_DIR}"):
            return
        # out in nginx's one all-or-nothing step (stages/nginx_txn.py), then the emptied folder
        nginx_apply(name="nginx: remove the link server (no worker hosts)",
                    files=[{"path": path, "absent": True} for path in (NGINX_LINK_CONF, *NGINX_LINK_FILES)],
                    **_txn(p))
        files.directory(name="Link certificates folder (no worker hosts)", path=NGINX_LINK_DIR, present=False)
        return
    address = p.link_address
    if not address:
        raise ValueError(f"{host.name}: the inventory has worker hosts but no link_address for the front")
    if not p.jobs_enabled:
        raise ValueError(f"{host.name}: the inventory has worker hosts but jobs_enabled is False")
    folder = pki_dir(p.link_pki_dir)
    ca_pem = ca(folder)[0]
    from cryptography.hazmat.primitives import serialization
    ca_text = ca_pem.public_bytes(serialization.Encoding.PEM).decode()
    cert, key = issue(folder, host.name, server_address=address)
    # the worker hosts' certificates as nginx pins them, and their tokens as the services check them
    pinned = sorted((w.name, cert_fingerprint(issue(folder, w.name)[0])) for w in workers)
    tokens = sorted((w.name, token_hash(worker_token(folder, w.name))) for w in workers)

    files.put(name="Worker hosts' token hashes (the link's job interface)", src=text_source(workers_file_text(tokens)),
              dest=LINK_WORKERS_FILE, user="root", group=p.app_user, mode="640")
    files.directory(name="Link certificates folder", path=NGINX_LINK_DIR, user="root", group="root", mode="700")
    conf = render_conf(link_address=address, link_https_port=p.link_https_port, link_dir=NGINX_LINK_DIR,
                       services=[(svc.key, svc.port) for svc in p.services], pinned=pinned)
    # certificates, key (secret: never shown) and server in nginx's one all-or-nothing step (stages/nginx_txn.py):
    # written, `nginx -t`, reloaded, or every previous file back
    ca_file, cert_file, key_file = NGINX_LINK_FILES
    nginx_apply(name="nginx: the worker hosts' job interface, on the link only",
                files=[{"path": ca_file, "content": ca_text, "mode": "644"},
                       {"path": cert_file, "content": cert, "mode": "644"},
                       {"path": key_file, "content": key, "mode": "600"},
                       {"path": NGINX_LINK_CONF, "content": conf, "mode": "644"}], **_txn(p))


def render_conf(**values) -> str:
    """templates/nginx/link.conf.j2, rendered as pyinfra's files.template renders it (StrictUndefined, the
    trailing newline kept)."""
    return render_template(REPO / "templates" / "nginx" / "link.conf.j2", **values)


def _txn(p: Platform) -> dict:
    # the link server claims none of the vhosts' names: nothing of another site's to disable
    return {"names": [], "ports": [], "backup_root": p.nginx_backup_dir, "state_dir": p.state_dir}

