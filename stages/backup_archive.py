"""The deploying machine's side of backups (no pyinfra here): the operator's age identity, and an archive
checked from end to end before a restore changes anything.

An archive (stages/host/backup.py writes them) is a tar encrypted with age to the operator's public key(s).
`open_archive` decrypts it into a private temporary folder with the identity file, then checks every member
against the manifest (its last member: size and SHA-256 of each file, the target of each link), that no
member points outside its folder, and that the archive belongs to this platform (its domain). Any problem
raises RestoreRefused, whose message says what is wrong; the deploy stops there, before its first operation.

    python -m stages.backup_archive keygen FILE     a new age identity in FILE (0600); prints its public key
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from stages.host.backup import CHUNK, FORMAT, KIND, parse_env, sha256_file  # the writer's own definitions (host side)

# members read into memory (secrets, certificates, small manifests); the rest stays in the tar for the host
SMALL = ("secrets/", "tls/", "letsencrypt/", "models/manifest.json", "autostart/", "link/", "manifest.json")
PREFIXES = ("secrets/", "tls/selfsigned/", "letsencrypt/", "redis/", "jobs/", "models/", "speakers/", "autostart/",
            "link/")
REPO = Path(__file__).resolve().parent.parent


class RestoreRefused(RuntimeError):
    """The archive or the identity cannot be used; raised before anything changes on the host."""

    def __init__(self, problem: str):
        super().__init__(f"restore: {problem}; nothing was changed on the host")


def local_path(value: str) -> Path:
    """A path on the deploying machine from group data: `~` expanded, relative to the repository."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO / path


# --- identities ---------------------------------------------------------------------------------------------
def keygen(path: Path) -> str:
    """A new X25519 identity written to `path` (0600, age-keygen's format); returns its public key."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# whisper-platform backup identity: keep it off the host (docs/rebuilding.md)\n"
                f"# public key: {public}\n{identity}\n")
    return public


def public_keys(path: Path) -> list[str]:
    """The public keys an identity file names in its `# public key:` comments (as age-keygen writes them)."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("# public key:"):
            out.append(line.split(":", 1)[1].strip())
    return out


def load_identities(value: str) -> list:
    from pyrage import x25519

    if not value:
        raise RestoreRefused("restore_identity is empty: give the age identity file that decrypts the backup "
                             "(--data restore_identity=PATH)")
    path = local_path(value)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RestoreRefused(f"restore_identity {path}: {exc.strerror}") from None
    identities = []
    for line in lines:
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(x25519.Identity.from_str(line))
            except Exception:   # pyrage.IdentityError; the line itself is never shown
                raise RestoreRefused(f"restore_identity {path}: a line that is no valid age identity") from None
    if not identities:
        raise RestoreRefused(f"restore_identity {path}: no age identity in it (a line AGE-SECRET-KEY-1...)")
    return identities


def encrypt(data: bytes, recipients: list[str]) -> bytes:
    import pyrage
    from pyrage import x25519

    return pyrage.encrypt(data, [x25519.Recipient.from_str(r) for r in recipients])


def decrypt(data: bytes, identities: list) -> bytes:
    import pyrage

    return pyrage.decrypt(data, identities)


# --- the archive --------------------------------------------------------------------------------------------
def _scratch() -> Path:
    """A private folder for the decrypted archive, removed when the deploy exits."""
    folder = Path(tempfile.mkdtemp(prefix="whisper-restore-"))
    os.chmod(folder, 0o700)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _safe_name(name: str) -> bool:
    parts = name.split("/")
    return (bool(name) and not name.startswith("/") and "\0" not in name and "\\" not in name
            and all(p not in ("", ".", "..") for p in parts))


@dataclass
class CheckedArchive:
    path: Path                    # the encrypted archive
    sha256: str                   # of the encrypted file: the archive's identity on the host's restore marker
    plain: Path                   # the decrypted tar (private temporary folder)
    plain_sha256: str
    manifest: dict
    small: dict[str, bytes] = field(default_factory=dict, repr=False)   # secrets, certificates, manifests

    @property
    def name(self) -> str:
        return self.path.name

    def env(self, service: str) -> dict[str, str] | None:
        data = self.small.get(f"secrets/env/{service}.env")
        return None if data is None else parse_env(data.decode("utf-8", "surrogateescape"))

    def certificate(self, member: str) -> bytes | None:
        """A file of the archive, following its symbolic links (certbot's live/ names)."""
        seen = 0
        while member in self.manifest["members"] and "link" in self.manifest["members"][member] and seen < 8:
            member = os.path.normpath(os.path.join(os.path.dirname(member), self.manifest["members"][member]["link"]))
            seen += 1
        return self.small.get(member)




def open_archive(archive: str, identity: str, domain: str) -> CheckedArchive:
    """Decrypt and check an archive for a restore onto the platform of `domain`; RestoreRefused otherwise."""
    import pyrage

    path = local_path(archive)
    if not path.is_file():
        raise RestoreRefused(f"restore_from {path}: no such file")
    identities = load_identities(identity)
    plain = _scratch() / "archive.tar"
    try:
        pyrage.decrypt_file(str(path), str(plain), identities)
    except (pyrage.DecryptError, OSError) as exc:   # a damaged payload comes as OSError("decryption error")
        why = str(exc)
        if "No matching keys" in why:
            raise RestoreRefused(f"{path.name} is not encrypted to the identity in {local_path(identity)} "
                                 "(wrong key)") from None
        if "Header is invalid" in why or "failed to fill whole buffer" in why:
            raise RestoreRefused(f"{path.name} is not an age-encrypted backup, or its header is damaged") from None
        raise RestoreRefused(f"{path.name} is corrupted or truncated (age: {why})") from None
    checked = verify_tar(plain)
    checked.path, checked.sha256 = path, sha256_file(path)
    check_platform(checked.manifest, domain, path.name)
    return checked


def verify_tar(plain: Path) -> CheckedArchive:
    """Every member of a decrypted archive against its manifest; the small ones kept in memory."""
    seen: dict[str, dict] = {}
    small: dict[str, bytes] = {}
    manifest = None
    try:
        with tarfile.open(plain, mode="r|") as tar:
            for member in tar:
                name = member.name
                if not _safe_name(name):
                    raise RestoreRefused(f"the archive holds an unsafe name {name!r}")
                if manifest is not None:
                    raise RestoreRefused(f"the archive holds {name!r} after its manifest")
                if member.isdir():
                    seen[name] = {"dir": True}
                    continue
                if member.issym():
                    target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                    if member.linkname.startswith("/") or target.split("/")[0] != name.split("/")[0]:
                        raise RestoreRefused(f"the archive's link {name!r} points outside its folder")
                    seen[name] = {"link": member.linkname}
                    continue
                if not member.isfile():
                    raise RestoreRefused(f"the archive holds {name!r}, which is neither file, folder nor link")
                f = tar.extractfile(member)
                assert f is not None   # a regular file (checked above) always has its data
                h = hashlib.sha256()
                keep = name.startswith(SMALL) and member.size <= 16 << 20
                data = bytearray()
                for block in iter(partial(f.read, CHUNK), b""):
                    h.update(block)
                    if keep:
                        data += block
                if name == "manifest.json":
                    try:
                        manifest = json.loads(bytes(data))
                    except ValueError:
                        raise RestoreRefused("the archive's manifest is not JSON") from None
                    continue
                if not name.startswith(PREFIXES):
                    raise RestoreRefused(f"the archive holds {name!r}, which no backup writes")
                seen[name] = {"size": member.size, "sha256": h.hexdigest()}
                if keep:
                    small[name] = bytes(data)
    except tarfile.TarError as exc:
        raise RestoreRefused(f"the decrypted archive is no complete tar ({exc})") from None
    if manifest is None:
        raise RestoreRefused("the archive has no manifest (truncated before its end?)")
    if manifest.get("kind") != KIND:
        raise RestoreRefused("the archive is no whisper-platform backup")
    if manifest.get("format") != FORMAT:
        raise RestoreRefused(f"the archive's format {manifest.get('format')} is not {FORMAT}: restore it with the "
                             "version of this repository that wrote it")
    expected = manifest.get("members") or {}
    for name, entry in expected.items():
        got = seen.get(name)
        if got is None:
            raise RestoreRefused(f"the archive lacks {name!r}, which its manifest lists")
        if "sha256" in entry and (got.get("sha256") != entry["sha256"] or got.get("size") != entry.get("size")):
            raise RestoreRefused(f"the archive's {name!r} differs from its manifest (damaged)")
        if "link" in entry and got.get("link") != entry["link"]:
            raise RestoreRefused(f"the archive's link {name!r} differs from its manifest")
    extra = sorted(set(seen) - set(expected))
    if extra:
        raise RestoreRefused(f"the archive holds {extra[0]!r}, which its manifest does not list")
    return CheckedArchive(path=plain, sha256="", plain=plain, plain_sha256=sha256_file(plain), manifest=manifest,
                          small=small)


def check_platform(manifest: dict, domain: str, name: str) -> None:
    theirs = (manifest.get("platform") or {}).get("domain")
    if theirs != domain:
        raise RestoreRefused(f"{name} is a backup of another platform ({theirs}, host {manifest.get('host')}), "
                             f"not of {domain}")


# --- the link PKI (stages/link.py keeps it on the deploying machine) -------------------------------------------
def pack_pki(folder: Path) -> bytes | None:
    """The link's CA and keys as a tar whose bytes depend only on the files (so its hash tells a change);
    None when the folder holds no CA."""
    if not (folder / "ca.crt").is_file():
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), path.stat().st_mode & 0o777, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_pki(blob: bytes, folder: Path) -> list[str]:
    """Put the archive's link PKI into `folder` (0700): only files missing there are written. A file there
    that differs refuses (two CAs for one platform cannot both be right). Returns the names written."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        for member in tar:
            if not member.isfile() or "/" in member.name or member.name in (".", ".."):
                raise RestoreRefused(f"the archive's link PKI holds an unexpected entry {member.name!r}")
            member_file = tar.extractfile(member)
            assert member_file is not None   # a regular file (checked above) always has its data
            files[member.name] = (member_file.read(), member.mode & 0o777)
    conflicts = [name for name, (data, _) in files.items()
                 if (folder / name).exists() and (folder / name).read_bytes() != data]
    if conflicts:
        raise RestoreRefused(f"link_pki_dir {folder} already holds another {conflicts[0]}: move that folder away "
                             "to restore the backup's link CA, or restore without it")
    written = []
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    for name, (data, mode) in sorted(files.items()):
        target = folder / name
        if target.exists():
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode or 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        written.append(name)
    return written


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "keygen":
        path = local_path(argv[1])
        if path.exists():
            print(f"{path} exists; its public key(s): {' '.join(public_keys(path)) or '(none noted)'}", file=sys.stderr)
            return 1
        print(keygen(path))
        return 0
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
