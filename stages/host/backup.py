#!/usr/bin/env python3
"""whisper-backup: encrypted backups of what a whisper-platform host cannot recreate. Standard library only.

The deploy (stages/backup.py) installs it as <platform_dir>/bin/whisper-backup with its settings in
/etc/whisper-platform/backup.json (root 0600); whisper-backup.timer runs `create` on a schedule.

  whisper-backup create [--config FILE]
      One archive in `backup_dir`, named whisper-platform-<host>-<UTC time>.tar.age: a tar of the generated
      secrets, our certificates (and certbot's lineages, renewal configs and account for our names), a Redis
      snapshot, the jobs folder, the model store's manifest, our autostart entries and the link PKI (itself
      encrypted by the deploying machine), streamed through `age` to the operator's public key(s): the host
      never holds the key that decrypts it. Then the oldest archives beyond `keep` are removed and, with `push`,
      the new one is copied over SSH. Prints one JSON line (path, bytes, sha256, seconds, what it holds).
  whisper-backup restore-files --archive TAR --sha256 HEX --targets FILE
      (the deploy, onto a fresh host) Puts the certificates, the jobs folder, the uploaded models and the Redis
      snapshot of a decrypted archive in place; the secrets go through the deploy's own stages.
  whisper-backup restore-redis --dump RDB --jobs-env FILE --marker FILE
      (the deploy, once Redis runs with the restored password) Loads the snapshot into Redis, AOF included.
  whisper-backup mark --marker FILE --step NAME
      Records a finished restore step in the host's restore marker.

The archive's last member, manifest.json, names the platform (domain, vhosts), the host, the time, and the
size and SHA-256 of every member: the deploying machine checks all of it before anything changes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from typing import cast

FORMAT = 1
KIND = "whisper-platform backup"
ARCHIVE_RE = re.compile(r"whisper-platform-.+-\d{8}T\d{6}Z\.tar\.age")
# a job folder's name (the job id) and the files in it; "*.part" files are writes in progress
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
UPLOAD_NAME = "audio"
RESULT_NAME = "result.json"
# RQ keeps a job's state in the hash rq:job:<id>, field "status"; these still need the job's audio
PENDING_STATES = {"queued", "started", "deferred", "scheduled"}
CHUNK = 1 << 20


class BackupFailed(RuntimeError):
    pass


# --- the archive being written ------------------------------------------------------------------------------
class _Exactly:
    """Reads exactly `size` bytes of a file that may shrink or grow while it is read (zero-padded), hashing
    what it hands out: the tar header said `size`, the manifest gets the hash of those bytes."""

    def __init__(self, f, size: int):
        self.f, self.left, self.sha = f, size, hashlib.sha256()

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        self.sha.update(data)
        return data


class Archive:
    """A tar written as a stream (into age's stdin), recording every member for the manifest."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)
        self.members: dict[str, dict] = {}
        self.bytes = 0

    def _info(self, name: str, kind, mode: int, size: int = 0, mtime: float | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size = kind, mode & 0o7777, size
        info.mtime = int(mtime if mtime is not None else time.time())
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_bytes(self, name: str, data: bytes, mode: int = 0o600) -> None:
        self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        self.members[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": mode & 0o7777}
        self.bytes += len(data)

    def add_file(self, name: str, path: str) -> bool:
        """A regular file as it is now; False when it vanished first (a job deleted meanwhile)."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return False
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return False
            reader = _Exactly(f, st.st_size)
            self.tar.addfile(self._info(name, tarfile.REGTYPE, st.st_mode, st.st_size, st.st_mtime), reader)
        self.members[name] = {"size": st.st_size, "sha256": reader.sha.hexdigest(), "mode": st.st_mode & 0o7777}
        self.bytes += st.st_size
        return True

    def add_link(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        self.members[name] = {"link": target}

    def add_dir(self, name: str, mode: int) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))
        self.members[name] = {"dir": True, "mode": mode & 0o7777}

    def add_tree(self, name: str, root: str) -> int:
        """A folder with its subfolders, files and symbolic links (certbot's lineages); returns files added."""
        count = 0
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            rel = os.path.relpath(folder, root)
            base = name if rel == "." else f"{name}/{rel}"
            self.add_dir(base, os.stat(folder).st_mode)
            for entry in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = os.path.join(folder, entry)
                if os.path.islink(path):
                    self.add_link(f"{base}/{entry}", os.readlink(path))
                elif self.add_file(f"{base}/{entry}", path):
                    count += 1
        return count

    def close(self) -> None:
        self.tar.close()


# --- what goes into it ----------------------------------------------------------------------------------------
def parse_env(text: str) -> dict[str, str]:
    """NAME=value lines of a .env file (`export`, spaces and quotes as compose reads them)."""
    values = {}
    for line in text.splitlines():
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", line)
        if m:
            values[m.group(1)] = m.group(2).strip("'\"")
    return values


def read_env(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_env(f.read())


class Redis:
    """redis-cli on the host's unix socket, with the password from the jobs' secret file (never in argv)."""

    def __init__(self, socket_path: str, jobs_env_file: str):
        self.socket = socket_path
        self.env = dict(os.environ, REDISCLI_AUTH=read_env(jobs_env_file).get("REDIS_PASSWORD", ""))

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        proc = subprocess.run(["redis-cli", "--no-auth-warning", "-s", self.socket, *args], input=stdin,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        out = proc.stdout
        if proc.returncode != 0 or out.startswith(("ERR", "NOAUTH", "WRONGPASS", "Could not connect")):
            raise BackupFailed(f"redis-cli {' '.join(args[:2])}: {(out + proc.stderr).strip()[:300]}")
        return out

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self("INFO", section).splitlines():
            key, sep, value = line.strip().partition(":")
            if sep:
                out[key] = value
        return out

    def config(self, name: str) -> str:
        lines = self("CONFIG", "GET", name).splitlines()
        return lines[1] if len(lines) > 1 else ""

    def snapshot(self, timeout: float = 600) -> str:
        """A consistent point-in-time copy of the dataset: BGSAVE (queued behind an AOF rewrite if one runs),
        waited for; returns the path of the RDB file Redis wrote."""
        before = int(self("LASTSAVE").strip())
        while int(time.time()) <= before:   # LASTSAVE counts seconds: ours must be a later one
            time.sleep(0.1)
        self("BGSAVE", "SCHEDULE")
        deadline = time.monotonic() + timeout
        while True:
            info = self.info("persistence")
            done = info.get("rdb_bgsave_in_progress") == "0" and int(info.get("rdb_last_save_time", "0")) > before
            if done:
                if info.get("rdb_last_bgsave_status") != "ok":
                    raise BackupFailed("Redis could not write its snapshot (rdb_last_bgsave_status: "
                                       f"{info.get('rdb_last_bgsave_status')}); see its log")
                break
            if time.monotonic() > deadline:
                raise BackupFailed(f"Redis's snapshot did not finish within {timeout:.0f} s")
            time.sleep(0.2)
        return os.path.join(self.config("dir"), self.config("dbfilename"))

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's RQ status ("" when Redis no longer has it), in one round trip."""
        if not job_ids:
            return {}
        out = self(stdin="".join(f"HGET rq:job:{job_id} status\n" for job_id in job_ids)).split("\n")
        return {job_id: (out[i].strip() if i < len(out) else "") for i, job_id in enumerate(job_ids)}


def add_secrets(archive: Archive, cfg: dict) -> list[str]:
    added = []
    for svc in cfg["services"]:
        if os.path.isfile(svc["env_file"]) and archive.add_file(f"secrets/env/{svc['key']}.env", svc["env_file"]):
            added.append(f"{svc['key']}.env")
    for name, path in (("jobs.env", cfg.get("jobs_env_file")), ("auth-map.conf", cfg.get("auth_map"))):
        if path and os.path.isfile(path) and archive.add_file(f"secrets/{name}", path):
            added.append(name)
    for name, path in sorted(cfg.get("secret_files", {}).items()):
        if os.path.isfile(path) and os.path.getsize(path) and archive.add_file(f"secrets/files/{name}", path):
            added.append(name)
    # the shared htpasswd file: our user's line only, the other tenants' lines are theirs
    user, path = cfg.get("htpasswd_user"), cfg.get("htpasswd_file")
    if user and path and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            ours = [line for line in f if line.startswith(user + ":")]
        if ours:
            archive.add_bytes("secrets/htpasswd", ours[0].rstrip("\r\n").encode("utf-8", "surrogateescape") + b"\n")
            added.append("htpasswd")
    return added


def renewal_account(conf: str) -> str | None:
    with open(conf, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*account\s*=\s*([0-9a-f]+)\s*$", line)
            if m:
                return m.group(1)
    return None


def add_certificates(archive: Archive, cfg: dict) -> list[str]:
    names = []
    if cfg["tls_mode"] == "selfsigned":
        for cert in cfg["certificates"]:
            for path in (cert["cert"], cert["key"]):
                if os.path.isfile(path):
                    archive.add_file(f"tls/selfsigned/{os.path.basename(path)}", path)
            names.append(cert["vhost"])
        return names
    le = cfg["letsencrypt_dir"]
    accounts = set()
    for cert in cfg["certificates"]:
        vhost = cert["vhost"]
        renewal = f"{le}/renewal/{vhost}.conf"
        if not os.path.isdir(f"{le}/live/{vhost}"):
            continue
        archive.add_tree(f"letsencrypt/live/{vhost}", f"{le}/live/{vhost}")
        if os.path.isdir(f"{le}/archive/{vhost}"):
            archive.add_tree(f"letsencrypt/archive/{vhost}", f"{le}/archive/{vhost}")
        if os.path.isfile(renewal):
            archive.add_file(f"letsencrypt/renewal/{vhost}.conf", renewal)
            account = renewal_account(renewal)
            if account:
                accounts.add(account)
        names.append(vhost)
    # the ACME account the renewals name: certbot renews with it (and no new registration)
    for account in sorted(accounts):
        for path in sorted(glob.glob(f"{le}/accounts/*/*/{account}") + glob.glob(f"{le}/accounts/*/*/*/{account}")):
            archive.add_tree("letsencrypt/" + os.path.relpath(path, le), path)
    return names


def add_jobs(archive: Archive, cfg: dict, redis: Redis | None) -> dict:
    """Every job folder: a finished job's result always, its audio only with `uploads`; a job still queued or
    running keeps its audio (it needs it to run after a restore)."""
    summary: dict = {}
    root = cfg["jobs_dir"]
    if not os.path.isdir(root):
        return summary
    for service in sorted(os.listdir(root)):
        folder = os.path.join(root, service)
        if not JOB_ID_RE.fullmatch(service) or not os.path.isdir(folder) or os.path.islink(folder):
            continue
        jobs = sorted(j for j in os.listdir(folder) if JOB_ID_RE.fullmatch(j) and os.path.isdir(os.path.join(folder, j)))
        open_jobs = [j for j in jobs if not os.path.exists(os.path.join(folder, j, RESULT_NAME))]
        states = redis.job_states(open_jobs) if redis else {}
        counts = {"jobs": 0, "pending": 0, "results": 0, "uploads": 0, "uploads_left_out": 0}
        archive.add_dir(f"jobs/{service}", os.stat(folder).st_mode)
        for job in jobs:
            path = os.path.join(folder, job)
            pending = states.get(job, "") in PENDING_STATES
            try:
                names = sorted(os.listdir(path))
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                continue   # deleted meanwhile (canceled, expired)
            archive.add_dir(f"jobs/{service}/{job}", mode)
            counts["jobs"] += 1
            counts["pending"] += pending
            for name in names:
                if name.endswith(".part") or not os.path.isfile(os.path.join(path, name)):
                    continue
                if name == UPLOAD_NAME and not (pending or cfg.get("uploads")):
                    counts["uploads_left_out"] += 1
                    continue
                if archive.add_file(f"jobs/{service}/{job}/{name}", os.path.join(path, name)):
                    counts["results"] += name == RESULT_NAME
                    counts["uploads"] += name == UPLOAD_NAME
        summary[service] = counts
    return summary


def add_models(archive: Archive, cfg: dict) -> list[dict]:
    """The model store's manifest (each model's files and sizes); the files themselves with `models`."""
    root = cfg["models_dir"]
    manifest = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            top = os.path.join(root, name)
            if not os.path.isdir(top):
                continue
            files = []
            for folder, dirs, names in os.walk(top):
                dirs.sort()
                for entry in sorted(names):
                    path = os.path.join(folder, entry)
                    if os.path.isfile(path) and not os.path.islink(path):
                        files.append({"path": os.path.relpath(path, top), "size": os.path.getsize(path)})
            manifest.append({"name": name, "files": files, "bytes": sum(f["size"] for f in files)})
            if cfg.get("models"):
                for f in files:
                    archive.add_file(f"models/store/{name}/{f['path']}", os.path.join(top, f["path"]))
    archive.add_bytes("models/manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o644)
    return manifest


def add_speakers(archive: Archive, cfg: dict) -> int:
    """The enrolled voices (embeddings per caller, never audio): each service's folder under speakers_dir."""
    root, count = cfg.get("speakers_dir") or "", 0
    if root and os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if os.path.isdir(os.path.join(root, name)) and not os.path.islink(os.path.join(root, name)):
                count += archive.add_tree(f"speakers/{name}", os.path.join(root, name))
    return count


def add_autostart_entries(archive: Archive, cfg: dict) -> int:
    path = cfg.get("autostart_config")
    if not path or not os.path.isfile(path):
        return 0
    try:
        with open(path, encoding="utf-8") as f:
            services = json.load(f).get("services", {})
    except (ValueError, AttributeError):
        return 0
    ours = {host: services[host] for host in cfg.get("autostart_hosts", []) if host in services}
    archive.add_bytes("autostart/entries.json", json.dumps(ours, indent=1, sort_keys=True).encode(), 0o644)
    return len(ours)


# --- create -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(path: str):
    """One backup at a time (the timer and an on-demand run)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("whisper-backup: another backup is running; waiting for it", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _key_count(keyspace: str) -> int:
    """N of one INFO keyspace value ("keys=N,expires=...,avg_ttl=..."), as Redis writes it."""
    return int(cast("re.Match[str]", re.search(r"keys=(\d+)", keyspace)).group(1))


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def rotate(folder: str, keep: int) -> list[str]:
    """Keep the newest `keep` archives (their names sort by time); leftovers of interrupted runs go too."""
    names = sorted(n for n in os.listdir(folder) if ARCHIVE_RE.fullmatch(n))
    gone = names[:-keep] if keep > 0 else []
    gone += [n for n in os.listdir(folder) if n.endswith(".tar.age.part")]
    for name in gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    return gone


def push(path: str, target: str, key: str) -> None:
    cmd = ["scp", "-q", "-B", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    if key:
        cmd += ["-i", key]
    proc = subprocess.run(cmd + [path, target.rstrip("/") + "/"], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise BackupFailed(f"push to {target} failed: {proc.stderr.strip()[:500]}")


def create(cfg: dict) -> dict:
    started = time.monotonic()
    os.umask(0o077)
    os.makedirs(cfg["backup_dir"], mode=0o700, exist_ok=True)
    os.makedirs(cfg["work_dir"], mode=0o700, exist_ok=True)
    if not shutil.which("age"):
        raise BackupFailed("the age command is missing (Debian package age); run the deploy")
    with locked(os.path.join(cfg["work_dir"], "backup.lock")):
        while True:   # names count seconds: a second backup within the same second waits for the next one
            created = time.gmtime()
            name = f"whisper-platform-{cfg['host']}-{time.strftime('%Y%m%dT%H%M%SZ', created)}.tar.age"
            final = os.path.join(cfg["backup_dir"], name)
            if not os.path.exists(final):
                break
            time.sleep(0.2)
        part = final + ".part"
        redis = None
        if cfg.get("jobs_enabled") and os.path.exists(cfg["redis_socket"]):
            redis = Redis(cfg["redis_socket"], cfg["jobs_env_file"])
        with open(part, "wb") as out:
            age = subprocess.Popen(["age", "--encrypt", "-R", cfg["recipients_file"]], stdin=subprocess.PIPE,
                                   stdout=out, stderr=subprocess.PIPE)
            assert age.stdin is not None and age.stderr is not None   # both opened as pipes
            try:
                archive = Archive(age.stdin)
                contents: dict = {"secrets": add_secrets(archive, cfg), "certificates": add_certificates(archive, cfg)}
                # Redis first, then the jobs folder: every job the snapshot knows has its folder (a job that
                # finished in between has its result there, and runs once more after a restore at worst)
                if redis:
                    dump = redis.snapshot()
                    archive.add_file("redis/dump.rdb", dump)
                    contents["redis_bytes"] = archive.members["redis/dump.rdb"]["size"]
                contents["jobs"] = add_jobs(archive, cfg, redis)
                contents["models"] = [m["name"] for m in add_models(archive, cfg)]
                contents["speakers"] = add_speakers(archive, cfg)
                contents["autostart_entries"] = add_autostart_entries(archive, cfg)
                if cfg.get("link_pki") and os.path.isfile(cfg["link_pki"]):
                    archive.add_file("link/pki.tar.age", cfg["link_pki"])
                    contents["link_pki"] = True
                manifest = {
                    "kind": KIND, "format": FORMAT, "host": cfg["host"], "platform": cfg["platform"],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", created), "tls_mode": cfg["tls_mode"],
                    "options": {"uploads": bool(cfg.get("uploads")), "models": bool(cfg.get("models"))},
                    "contents": contents, "members": archive.members,
                }
                archive.add_bytes("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode(), 0o644)
                archive.close()
                age.stdin.close()
            except BaseException:
                age.kill()
                age.wait()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
                raise
            err = age.stderr.read().decode(errors="replace")
            if age.wait() != 0:
                os.unlink(part)
                raise BackupFailed(f"age failed: {err.strip()[:500]}")
            out.flush()
            os.fsync(out.fileno())
        os.rename(part, final)
        removed = rotate(cfg["backup_dir"], int(cfg["keep"]))
        result = {"path": final, "name": name, "bytes": os.path.getsize(final), "sha256": sha256_file(final),
                  "plain_bytes": archive.bytes, "members": len(archive.members), "removed": removed,
                  "contents": contents}
        if cfg.get("push"):
            push(final, cfg["push"], cfg.get("push_key", ""))
            result["pushed"] = cfg["push"]
        result["seconds"] = round(time.monotonic() - started, 2)
        # for monitoring: when the last backup succeeded, and how big it was
        with open(os.path.join(cfg["work_dir"], "last-success.json"), "w") as f:
            json.dump({"time": int(time.time()), **{k: result[k] for k in ("name", "bytes", "seconds")}}, f)
        return result


# --- restore (the deploy, onto a fresh host) ------------------------------------------------------------------
def _inside(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    if rel.startswith("/") or ".." in rel.split("/") or not path.startswith(root.rstrip("/") + "/"):
        raise BackupFailed(f"refusing archive member outside its folder: {rel!r}")
    return path


def _write(path: str, src, mode: int, uid: int = 0, gid: int = 0) -> None:
    part = path + ".restore-part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        shutil.copyfileobj(src, f, CHUNK)
    os.chown(part, uid, gid)
    os.chmod(part, mode)
    os.rename(part, path)


def update_marker(path: str, **fields) -> dict:
    marker = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    marker.update(fields)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return marker


def restore_files(archive_path: str, sha256: str, targets: dict) -> dict:
    """Certificates, jobs, models and the Redis snapshot of a decrypted archive, each to its folder on this
    host (targets: the deploy's paths). Secrets are not written here: the deploy's stages write them."""
    if sha256_file(archive_path) != sha256:
        raise BackupFailed("the uploaded archive differs from the one the deploy checked (transfer damaged)")
    uid = int(targets["app_uid"])
    roots = {"tls/selfsigned/": targets["selfsigned_dir"], "letsencrypt/": targets["letsencrypt_dir"],
             "jobs/": targets["jobs_dir"], "models/store/": targets["models_dir"]}
    if targets.get("speakers_dir"):
        roots["speakers/"] = targets["speakers_dir"]
    counts = {prefix: 0 for prefix in roots}
    with tarfile.open(archive_path, "r:") as tar:
        for member in tar:
            if member.name == "redis/dump.rdb" and member.isfile():
                os.makedirs(os.path.dirname(targets["dump"]), mode=0o700, exist_ok=True)
                _write(targets["dump"], tar.extractfile(member), 0o600)
                counts["redis"] = member.size
                continue
            prefix = next((p for p in roots if member.name.startswith(p)), None)
            if prefix is None:
                continue
            root = roots[prefix]
            path = _inside(root, member.name[len(prefix):])
            owner = (uid, uid) if prefix in ("jobs/", "speakers/") else (0, 0)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                os.chown(path, *owner)
                os.chmod(path, member.mode & 0o7777 or 0o755)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if member.issym():
                # certbot's live/ links point into ../../archive/: they must stay inside the tree
                _inside(root, os.path.normpath(os.path.join(os.path.dirname(member.name[len(prefix):]),
                                                            member.linkname)))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                os.symlink(member.linkname, path)
            elif member.isfile():
                mode = member.mode & 0o777 or 0o600
                _write(path, tar.extractfile(member), mode, *owner)
                counts[prefix] += 1
    update_marker(targets["marker"], archive=targets["archive_name"], sha256=targets["archive_sha256"],
                  files=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {"files": {k.rstrip("/"): v for k, v in counts.items()}}


def _wait(check, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BackupFailed(f"timed out waiting for {what}")
        time.sleep(0.2)


def restore_redis(dump: str, jobs_env_file: str, marker: str, socket_path: str, unit: str = "redis-server",
                  conf: str = "/etc/redis/redis.conf") -> dict:
    """Load an RDB snapshot into the host's Redis with its AOF: Redis loads an RDB file only with AOF off, so a
    one-off server (no TCP, a private socket) loads it with AOF off, turns AOF on (a rewrite from the loaded
    data), and stops; then the service starts from that AOF."""
    live = Redis(socket_path, jobs_env_file)
    folder, dbfilename = live.config("dir"), live.config("dbfilename")
    aof_dir = live.config("appenddirname") or ""
    aof_file = live.config("appendfilename") or "appendonly.aof"
    subprocess.run(["systemctl", "stop", unit], check=True)
    aside = os.path.join(folder, "before-restore-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(aside, mode=0o700)
    for name in filter(None, (aof_dir, aof_file, dbfilename)):
        if os.path.exists(os.path.join(folder, name)):
            os.rename(os.path.join(folder, name), os.path.join(aside, name))
    owner = os.stat(folder)
    with open(dump, "rb") as src:
        _write(os.path.join(folder, dbfilename), src, 0o660, owner.st_uid, owner.st_gid)
    run_dir = "/run/whisper-backup-restore"
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    os.chown(run_dir, owner.st_uid, owner.st_gid)
    sock = os.path.join(run_dir, "redis.sock")
    user = __import__("pwd").getpwuid(owner.st_uid).pw_name
    loader = subprocess.Popen(
        ["runuser", "-u", user, "--", "redis-server", conf, "--daemonize", "no", "--supervised", "no",
         "--appendonly", "no", "--port", "0", "--tls-port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
         "--pidfile", os.path.join(run_dir, "redis.pid"), "--logfile", os.path.join(run_dir, "redis.log")])
    try:
        one_off = Redis(sock, jobs_env_file)

        def answers() -> bool:
            if loader.poll() is not None:
                log = open(os.path.join(run_dir, "redis.log"), errors="replace").read()[-1500:]
                raise BackupFailed(f"Redis could not load the snapshot:\n{log}")
            try:
                return one_off("PING").strip() == "PONG"
            except BackupFailed:
                return False
        _wait(answers, "Redis to load the snapshot")
        keys = sum(_key_count(v) for v in one_off.info("keyspace").values())
        one_off("CONFIG", "SET", "appendonly", "yes")

        def rewritten() -> bool:
            info = one_off.info("persistence")
            if info.get("aof_last_bgrewrite_status") == "err":
                raise BackupFailed("Redis could not write its append-only file from the snapshot")
            return info.get("aof_rewrite_in_progress") == "0" and info.get("aof_rewrite_scheduled") == "0" \
                and os.path.exists(os.path.join(folder, aof_dir or aof_file))
        _wait(rewritten, "Redis's append-only file")
        with contextlib.suppress(BackupFailed):
            one_off("SHUTDOWN")   # the connection closes as it exits
        loader.wait(60)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    subprocess.run(["systemctl", "start", unit], check=True)

    def serving() -> bool:
        try:
            return live("PING").strip() == "PONG"
        except BackupFailed:
            return False
    _wait(serving, f"{unit} to start")
    loaded = sum(_key_count(v) for v in live.info("keyspace").values())
    if loaded != keys:
        raise BackupFailed(f"Redis holds {loaded} keys after the restore, the snapshot {keys}")
    os.unlink(dump)
    update_marker(marker, redis=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {"keys": keys, "previous_data": aside}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="whisper-backup", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="one encrypted backup now")
    c.add_argument("--config", default="/etc/whisper-platform/backup.json")
    f = sub.add_parser("restore-files")
    f.add_argument("--archive", required=True)
    f.add_argument("--sha256", required=True)
    f.add_argument("--targets", required=True)
    r = sub.add_parser("restore-redis")
    r.add_argument("--dump", required=True)
    r.add_argument("--jobs-env", required=True)
    r.add_argument("--marker", required=True)
    r.add_argument("--socket", required=True, help="the host's Redis socket (the deploy's redis_socket_dir)")
    m = sub.add_parser("mark")
    m.add_argument("--marker", required=True)
    m.add_argument("--step", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            with open(args.config, encoding="utf-8") as fh:
                result = create(json.load(fh))
        elif args.command == "restore-files":
            with open(args.targets, encoding="utf-8") as fh:
                result = restore_files(args.archive, args.sha256, json.load(fh))
        elif args.command == "restore-redis":
            result = restore_redis(args.dump, args.jobs_env, args.marker, args.socket)
        else:
            result = update_marker(args.marker, **{args.step: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except (BackupFailed, OSError, subprocess.SubprocessError) as exc:
        print(f"whisper-backup {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
