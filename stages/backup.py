"""Stage "backup": encrypted backups of what the platform cannot recreate, and their restore onto a fresh host
as part of the normal deploy (docs/rebuilding.md is the operator's runbook).

Backups (`backup_recipients`: the operator's age public keys). `backups` installs `age` and the host-side tool
(stages/host/backup.py, as <platform_dir>/bin/whisper-backup), its settings (/etc/whisper-platform/backup.json,
root-only: it names the basic-auth user) and whisper-backup.timer (`backup_schedule`), which writes one archive
into `backup_dir`, keeps the newest `backup_keep` and copies each to `backup_push` over SSH when set. The host
holds only public keys: the identity that decrypts an archive stays with the operator. The link PKI of the
worker hosts lives on the deploying machine (stages/link.py): the deploy leaves it on the host encrypted to the
same keys, so every backup holds it too. `pyinfra inventory.py backup.py` (`make backup`) takes one now and
pulls it into `backup_pull_dir`.

Restore (`--data restore_from=ARCHIVE --data restore_identity=FILE`). `restore` runs before any stage that would
generate a secret. It decrypts and checks the whole archive on the deploying machine first (stages/backup_archive.py):
a wrong identity, a corrupted or truncated file, or a backup of another platform (its domain) stops the deploy
before its first operation. Then:
- the API keys and HF token become this run's values where the environment gives none (a variable given in the
  environment still wins), so the services' .env and nginx's auth map are written with them by their own stages
  and no key is generated;
- the jobs' secret file (Redis password, webhook secret) and our htpasswd line are written back, and
  stages.restoring tells the Redis and nginx stages so, which then generate nothing;
- certificates (certbot's lineages, renewal configs and account, or the self-signed pairs), the jobs folder,
  uploaded models and the Redis snapshot go to the host in one upload and are put in place there; the web stage
  reuses the certificates (stages.restoring again: no new certificate, no Let's Encrypt rate limit);
- `restore_redis` loads the snapshot once Redis runs (queued jobs, finished jobs' states and results);
- `resume_jobs`, last, starts the services that have jobs waiting, so their workers take them, and marks the
  restore complete.
Each step is recorded in the host's restore marker (<state_dir>/restore.json), so a run that failed halfway
resumes where it stopped, and a second run with the same archive changes nothing. A host that already holds
platform state (its jobs' secret file or a service's .env) is never restored over.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import shlex
from typing import cast

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, python, server, systemd

from stages import restoring
from stages.backup_archive import (CheckedArchive, RestoreRefused, decrypt, encrypt, load_identities, local_path,
                                   open_archive, pack_pki, sha256_file, unpack_pki)
from stages.compose_projects import locked
from stages.monitoring_config import SMTP_PASSWORD_FILE
from stages.ops import CommandSucceeds, ComposeFlavour, RawFile, compose_command, render_template, secret_file, text_source
from stages.redis import socket_path
from stages.secrets_env import Secret, validate
from stages.settings import REPO, Platform
from stages.signals import beyond_header, changed, restart_unit
from stages.web import AUTH_MAP, cert_paths, sites

SCRIPT = REPO / "stages" / "host" / "backup.py"
CONFIG = "/etc/whisper-platform/backup.json"
RECIPIENTS = "/etc/whisper-platform/backup-recipients.txt"
UNIT = "whisper-backup"
LETSENCRYPT = "/etc/letsencrypt"

# the restore under way per host (set by `restore`, read by `restore_redis` and `resume_jobs`)
_restores: dict[str, dict] = {}


def tool(p: Platform) -> str:
    return f"{p.platform_dir}/bin/whisper-backup"


def work_dir(p: Platform) -> str:
    return f"{p.state_dir}/backup"


def marker_path(p: Platform) -> str:
    return f"{p.state_dir}/restore.json"


def platform_identity(p: Platform) -> dict:
    """What names a platform in its backups: a restore refuses an archive of another domain."""
    return {"domain": p.domain, "vhosts": sorted(svc.vhost for svc in p.services)}


def host_config(p: Platform, user: str, host_name: str) -> dict:
    """whisper-backup's settings on the host: what to back up, where from, where to."""
    return {
        "host": host_name, "platform": platform_identity(p),
        "backup_dir": p.backup_dir, "keep": p.backup_keep, "recipients_file": RECIPIENTS,
        "push": p.backup_push, "push_key": p.backup_push_key,
        "uploads": p.backup_uploads, "models": p.backup_models, "work_dir": work_dir(p),
        "services": [{"key": svc.key, "env_file": f"{svc.project_dir}/.env"} for svc in p.services],
        "jobs_enabled": p.jobs_enabled, "jobs_env_file": p.jobs_env_file, "jobs_dir": p.jobs_dir,
        "redis_socket": socket_path(p), "auth_map": AUTH_MAP,
        # operator-given secrets the host keeps in files of their own: archived as secrets/files/<name>
        "secret_files": {"smtp-password": SMTP_PASSWORD_FILE},
        "htpasswd_file": p.htpasswd_file, "htpasswd_user": user,
        "tls_mode": p.tls_mode, "letsencrypt_dir": LETSENCRYPT,
        "certificates": [dict(zip(("vhost", "cert", "key"), (site.vhost, *cert_paths(site, p)))) for site in sites(p)],
        "models_dir": p.models_dir, "speakers_dir": p.speakers_dir,
        "autostart_config": p.autostart_config, "autostart_hosts": [svc.vhost for svc in p.services],
        "link_pki": f"{work_dir(p)}/link-pki.tar.age",
    }


@operation()
def upload_bytes(path: str, data: bytes, mode: str = "600", note: str = ""):
    """Put bytes at `path` (root-only folder first, then moved into place); nothing of them is printed."""
    host.log(f"Will write {path}{note}")
    folder = posixpath.dirname(path)
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", folder)
    yield FileUploadCommand(io.BytesIO(data), path + ".new", remote_temp_filename=path + ".new.part")
    yield StringCommand("chmod", mode, path + ".new")
    yield StringCommand("mv", "-f", path + ".new", path)


# --- backups on the host ------------------------------------------------------------------------------------
@deploy("Backups: encrypted, on a timer")
def backups(p: Platform, env_secrets: dict):
    timer_path = f"/etc/systemd/system/{UNIT}.timer"
    if not p.backup_recipients:
        if host.get_fact(File, path=timer_path):
            server.shell(name="Backups off (backup_recipients empty): timer stopped and removed, archives kept",
                         commands=[f"systemctl disable --now {UNIT}.timer",
                                   f"rm -f {timer_path} /etc/systemd/system/{UNIT}.service",
                                   "systemctl daemon-reload"])
        return
    apt.packages(name="Install age (encrypts the backups)", packages=["age"], no_recommends=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    files.put(name="Backup tool", src=str(SCRIPT), dest=tool(p), mode="755", create_remote_dir=True)
    for folder in (p.backup_dir, work_dir(p), posixpath.dirname(CONFIG)):
        files.directory(name=f"Backup folder {folder} (root only)", path=folder, mode="700")
    files.put(name="Backup recipients (the operator's age public keys)",
              src=io.StringIO("".join(f"{key}\n" for key in p.backup_recipients)), dest=RECIPIENTS, mode="644")
    user = env_secrets["WHISPER_BASIC_AUTH_USER"].reveal()
    secret_file(name="Backup settings (names the basic-auth user: root-only)", path=CONFIG,
                content=Secret(json.dumps(host_config(p, user, host.name), indent=1, sort_keys=True) + "\n"),
                staging_dir=f"{p.state_dir}/staging")
    link_pki(p)
    paths = {kind: f"/etc/systemd/system/{UNIT}.{kind}" for kind in ("service", "timer")}
    texts = {kind: render_template(REPO / f"templates/systemd/{UNIT}.{kind}.j2", tool=tool(p), config=CONFIG,
                                   backup_dir=p.backup_dir, schedule=p.backup_schedule, keep=p.backup_keep)
             for kind in paths}
    units = {kind: files.put(name=f"systemd unit {UNIT}.{kind}", src=text_source(texts[kind]), dest=paths[kind],
                             mode="644") for kind in paths}
    server.shell(name="systemd: reload units (backups)", commands=["systemctl daemon-reload"],
                 _if=changed(*units.values()))
    # a timer whose header alone changed (an earlier version's marker) keeps its schedule: no restart
    restart_unit(f"{UNIT}.timer", changed(beyond_header(units["timer"], paths["timer"], texts["timer"],
                                                        tuple(paths.values()))),
                 "its schedule changed", enable=True)
    systemd.service(name="Backup timer running and enabled", service=f"{UNIT}.timer", running=True, enabled=True)


def link_pki(p: Platform) -> None:
    """The deploying machine's link CA and keys, encrypted to the backup recipients, where the host's backups
    pick them up; uploaded again only when they or the recipients changed (compared by a hash)."""
    blob = pack_pki(local_path(p.link_pki_dir))
    if blob is None:
        return
    digest = hashlib.sha256(blob + "\n".join(p.backup_recipients).encode()).hexdigest()
    path = f"{work_dir(p)}/link-pki.tar.age"
    if (host.get_fact(RawFile, path=path + ".sha256") or "").strip() == digest:
        return
    upload_bytes(name="Link CA and keys for the backups (encrypted to backup_recipients)", path=path,
                 data=encrypt(blob, list(p.backup_recipients)), note=" (encrypted, contents not shown)")
    upload_bytes(name="Link PKI hash", path=path + ".sha256", data=f"{digest}\n".encode(), mode="644")


# --- on demand: pyinfra inventory.py backup.py ------------------------------------------------------------------
def pull(p: Platform) -> None:
    """Take a backup on the host now and copy it into `backup_pull_dir` on this machine."""
    if not p.backup_recipients:
        raise OperationError(f"{host.name}: backup_recipients is empty, so backups are off: set the operator's "
                             "age public key and deploy first (docs/rebuilding.md)")
    dest = local_path(p.backup_pull_dir)
    python.call(name=f"Back up {host.name} now and pull the archive into {dest}", function=_pull, p=p, dest=dest)


def _pull(p: Platform, dest) -> None:
    status, output = host.run_shell_command(StringCommand("python3", tool(p), "create", "--config", CONFIG))
    if not status:
        raise OperationError(f"whisper-backup create failed on {host.name}: {output.stderr[-2000:]}")
    result = json.loads(output.stdout_lines[-1])
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = dest / (result["name"] + ".part")
    if not host.get_file(result["path"], str(part)):
        raise OperationError(f"could not download {result['path']} from {host.name}")
    if sha256_file(part) != result["sha256"]:
        part.unlink()
        raise OperationError(f"{result['name']}: the downloaded copy differs from the host's (transfer damaged)")
    local = dest / result["name"]
    part.chmod(0o600)
    part.rename(local)
    host.log(f"Backup {local} ({result['bytes'] / 1e6:.1f} MB, taken in {result['seconds']} s; on the host: "
             f"{result['path']})")
    if p.restore_identity:
        checked = open_archive(str(local), p.restore_identity, p.domain)
        host.log(f"Checked with {p.restore_identity}: it decrypts, its {len(checked.manifest['members'])} members "
                 "match its manifest")


# --- restore onto a fresh host -------------------------------------------------------------------------------------
def _marker(p: Platform) -> dict | None:
    text = host.get_fact(RawFile, path=marker_path(p))
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise RestoreRefused(f"{marker_path(p)} on {host.name} is damaged: look at it, then remove it") from None


def _state_files(p: Platform) -> list[str]:
    return [p.jobs_env_file] + [f"{svc.project_dir}/.env" for svc in p.all_services]


@deploy("Restore from a backup")
def restore(p: Platform, env_secrets: dict):
    """Check the archive, then put every secret back before any stage would generate one (see the module doc)."""
    if not p.restore_from:
        return
    archive = local_path(p.restore_from)
    if not archive.is_file():
        raise RestoreRefused(f"restore_from {archive}: no such file")
    sha = sha256_file(archive)
    marker = _marker(p)
    if marker:
        if marker.get("sha256") != sha:
            raise RestoreRefused(f"{host.name} was restored from {marker.get('archive')} already, not from "
                                 f"{archive.name}: drop restore_from to deploy it as it is")
        if marker.get("done"):
            host.log(f"restore: {host.name} was restored from {archive.name} ({marker['done']}); nothing to do")
            return
    else:
        present = [path for path in _state_files(p)
                   if host.get_fact(CommandSucceeds, command=f"test -e {shlex.quote(path)}")]
        if present:
            raise RestoreRefused(f"{host.name} already holds platform state ({', '.join(present)}): a restore is "
                                 "for a fresh host and would replace its secrets and jobs. Deploy without "
                                 "restore_from, or rebuild the host first")
    checked = open_archive(p.restore_from, p.restore_identity, p.domain)
    manifest = checked.manifest
    done = marker or {}
    notes = _secrets_from(checked, p, env_secrets)
    notes += _link_pki_from(checked, p)
    notes += _certificates_from(checked, p)

    jobs_env = checked.small.get("secrets/jobs.env")
    if jobs_env is not None:
        restoring.will_restore(p.jobs_env_file, jobs_env)
        files.directory(name=f"Folder of {p.jobs_env_file}", path=posixpath.dirname(p.jobs_env_file), mode="700")
        secret_file(name=f"Restore {p.jobs_env_file} (Redis password, webhook secret)", path=p.jobs_env_file,
                    content=Secret(jobs_env.decode()), staging_dir=f"{p.state_dir}/staging")
        notes.append("the Redis password and webhook secret")

    contents = manifest.get("contents", {})
    jobs = contents.get("jobs", {})
    if not done.get("files"):
        files.put(name="Backup tool (for the restore)", src=str(SCRIPT), dest=tool(p), mode="755",
                  create_remote_dir=True)
        _restore_files(name=f"Restore certificates, jobs, models and the Redis snapshot from {checked.name}",
                       checked=checked, p=p)
    has_dump = "redis/dump.rdb" in manifest["members"]
    _restores[host.name] = {
        "archive": checked.name,
        "redis": has_dump and not done.get("redis"),
        "pending": {svc: counts.get("pending", 0) for svc, counts in jobs.items()},
    }
    n_jobs = sum(c.get("jobs", 0) for c in jobs.values())
    n_pending = sum(c.get("pending", 0) for c in jobs.values())
    notes.append(f"{n_jobs} jobs ({n_pending} queued or running)" + (", the Redis snapshot" if has_dump else ""))
    models = contents.get("models", [])
    missing = [m for m in models if m not in p.model_uploads and not manifest["options"].get("models")]
    host.log(f"Restoring from {checked.name} (a backup of {manifest['host']}, taken {manifest['created']}): "
             + "; ".join(notes))
    if missing:
        host.log(f"restore: the backup's model store listed {', '.join(missing)}, not in it (backup_models was "
                 "off) nor in model_uploads: upload them, or let the services download them")


def _secrets_from(checked: CheckedArchive, p: Platform, env_secrets: dict) -> list[str]:
    """The archive's API keys and HF token as this run's values where the environment has none."""
    # the backup writes only secrets/env/<service>.env there, so each name finds its own file
    envs = [cast("dict[str, str]", checked.env(name[len("secrets/env/"):-len(".env")]))
            for name in sorted(checked.small) if name.startswith("secrets/env/")]
    notes = []
    keys = next((env["STT_API_KEYS"] for env in envs if env.get("STT_API_KEYS")), None)
    if keys and env_secrets.get("WHISPER_API_KEY") is None:
        env_secrets["WHISPER_API_KEY"] = Secret(keys)
        notes.append("the API keys")
    token = next((env["HF_TOKEN"] for env in envs if "HF_TOKEN" in env), None)
    if token is not None and env_secrets.get("HF_TOKEN") is None:
        env_secrets["HF_TOKEN"] = Secret(token)
        notes.append("the HF token" if token else "an empty HF token")
    # the file as Alertmanager reads it; a line end an operator's editor added is not part of the password
    smtp = checked.small.get("secrets/files/smtp-password", b"").decode("utf-8", "surrogateescape").rstrip("\r\n")
    if smtp and env_secrets.get("WHISPER_SMTP_PASSWORD") is None:
        env_secrets["WHISPER_SMTP_PASSWORD"] = Secret(smtp)
        notes.append("the alert e-mails' SMTP password")
    try:
        validate(env_secrets)
    except ValueError as exc:
        raise RestoreRefused(f"a secret in the archive is unusable: {exc}") from None
    line = checked.small.get("secrets/htpasswd", b"").decode("utf-8", "surrogateescape").strip()
    user = env_secrets["WHISPER_BASIC_AUTH_USER"].reveal()
    if line.startswith(user + ":") and env_secrets.get("WHISPER_BASIC_AUTH_PASSWORD") is None:
        restoring.will_restore_htpasswd(p.htpasswd_file, user, Secret(line))
        notes.append(f"{user}'s basic-auth line")
    return notes


def _link_pki_from(checked: CheckedArchive, p: Platform) -> list[str]:
    blob = checked.small.get("link/pki.tar.age")
    if blob is None:
        return []
    try:
        plain = decrypt(blob, load_identities(p.restore_identity))
    except Exception:   # pyrage.DecryptError
        raise RestoreRefused("the archive's link PKI does not decrypt with restore_identity") from None
    written = unpack_pki(plain, local_path(p.link_pki_dir))
    return [f"the link CA and keys ({len(written)} files into {p.link_pki_dir})" if written
            else "the link CA and keys (already on this machine)"]


def _certificates_from(checked: CheckedArchive, p: Platform) -> list[str]:
    names = []
    for site in sites(p):   # the services' vhosts and the monitoring page's
        cert = cert_paths(site, p)[0]
        member = (f"tls/selfsigned/{posixpath.basename(cert)}" if p.tls_mode == "selfsigned"
                  else f"letsencrypt/live/{site.vhost}/{posixpath.basename(cert)}")
        pem = checked.certificate(member)
        if pem is not None:
            restoring.will_restore(cert, pem)
            names.append(site.vhost)
    return [f"the certificates of {', '.join(names)}"] if names else []


@operation(is_idempotent=False)
def _restore_files(checked: CheckedArchive, p: Platform):
    """Upload the decrypted archive to a root-only folder, put its files in place with the host-side tool, and
    delete the upload."""
    staging = f"{p.state_dir}/staging"
    tar, targets = f"{staging}/restore.tar", f"{staging}/restore-targets.json"
    spec = {"selfsigned_dir": p.selfsigned_dir, "letsencrypt_dir": LETSENCRYPT, "jobs_dir": p.jobs_dir,
            "models_dir": p.models_dir, "speakers_dir": p.speakers_dir, "app_uid": p.app_uid, "dump": f"{work_dir(p)}/restore-dump.rdb",
            "marker": marker_path(p), "archive_name": checked.name, "archive_sha256": checked.sha256}
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", staging)
    yield FileUploadCommand(str(checked.plain), tar, remote_temp_filename=tar + ".part")
    yield FileUploadCommand(io.BytesIO(json.dumps(spec).encode()), targets, remote_temp_filename=targets + ".part")
    yield StringCommand("python3", tool(p), "restore-files", "--archive", tar, "--sha256", checked.plain_sha256,
                        "--targets", targets)
    yield StringCommand("rm", "-f", tar, targets)


@deploy("Restore: the Redis snapshot")
def restore_redis(p: Platform):
    """Once Redis runs with the restored password: load the archive's snapshot (queued jobs, finished ones)."""
    todo = _restores.get(host.name)
    if not todo or not todo["redis"]:
        return
    if not p.jobs_enabled:
        host.log("restore: jobs_enabled is False here, so the backup's Redis snapshot is not loaded")
        return
    server.shell(name=f"Load the Redis snapshot of {todo['archive']} (queued and finished jobs)", commands=[
        StringCommand("python3", tool(p), "restore-redis", "--dump", f"{work_dir(p)}/restore-dump.rdb",  # type: ignore[list-item]  # pyinfra types commands as str; it runs a StringCommand as is
                      "--jobs-env", p.jobs_env_file, "--socket", socket_path(p), "--marker", marker_path(p))])


@deploy("Restore: resume the jobs")
def resume_jobs(p: Platform):
    """Last: start each service whose restored jobs wait (its worker takes them; the autostart proxy stops it
    when idle, never while jobs are queued or running), then mark the restore complete."""
    todo = _restores.get(host.name)
    if not todo:
        return
    waiting = [svc for svc in p.services if todo["pending"].get(svc.key) and p.jobs_enabled]
    if waiting:
        compose = compose_command(host.get_fact(ComposeFlavour))
        server.shell(name=f"Start {', '.join(svc.key for svc in waiting)}: restored jobs wait for their workers",
                     commands=[f"cd {shlex.quote(svc.project_dir)} && {locked(svc.project_dir)}{compose} up -d"
                               for svc in waiting])
    server.shell(name=f"Restore from {todo['archive']} complete", commands=[
        StringCommand("python3", tool(p), "mark", "--marker", marker_path(p), "--step", "done")])  # type: ignore[list-item]  # pyinfra types commands as str; it runs a StringCommand as is
