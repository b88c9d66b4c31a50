"""What a restore from a backup (stages/backup.py) puts on the host during this run, for the stages that would
otherwise generate it.

pyinfra reads facts before anything runs: on a fresh host a certificate, the jobs' secret file or our htpasswd
line that the restore puts back early in the run still looks absent when later stages are planned, and they
would plan to make new ones (a new certificate, a new Redis password and webhook secret). Those stages ask here
first. Filled by stages.backup.restore for the host being planned; empty on every run without `restore_from`.
"""

from __future__ import annotations

import datetime

from pyinfra import host

from stages.secrets_env import Secret

_files: dict[str, dict[str, bytes]] = {}      # host name -> path -> content
_htpasswd: dict[str, dict[tuple[str, str], Secret]] = {}


def will_restore(path: str, content: bytes) -> None:
    _files.setdefault(host.name, {})[path] = content


def will_restore_htpasswd(path: str, user: str, line: Secret) -> None:
    _htpasswd.setdefault(host.name, {})[(path, user)] = line


def restored(path: str) -> bytes | None:
    """The content this run's restore puts at `path` on the current host, or None."""
    return _files.get(host.name, {}).get(path)


def restored_htpasswd(path: str, user: str) -> Secret | None:
    """`user`'s htpasswd line (with its bcrypt hash) that this run's restore brings back, or None."""
    return _htpasswd.get(host.name, {}).get((path, user))


def certificate_valid_for(pem: bytes, seconds: int) -> bool:
    """Whether a PEM certificate is still valid `seconds` from now (`openssl x509 -checkend`)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    end = cert.not_valid_after_utc
    return end > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
