"""Backups and restore without a host: the knobs' checks, an archive's checks on the deploying machine (archives
written in-process by the host tool's own writer, encrypted with pyrage), the restore's hand-over to the stages
that would otherwise generate a secret, and the htpasswd line a restore writes back. The host tool itself runs
for real in tests/integration/provision/test_backup_tool.py, the whole rebuild in tests/e2e/test_rebuild.py."""

from __future__ import annotations

import datetime
import io
import json
import re
import tarfile

import pytest
from pyinfra.api import OperationError
from pyinfra.context import ctx_host
from support.pyinfra_ops import StandInHost, fact, run_op, uploaded

from stages import restoring
from stages.backup import host_config, platform_identity
from stages.backup_archive import (RestoreRefused, encrypt, keygen, open_archive, pack_pki, parse_env, public_keys,
                                   unpack_pki, verify_tar)
from stages.host.backup import FORMAT, KIND, Archive, rotate
from stages.ops import HtpasswdHash, htpasswd_user
from stages.secrets_env import Secret
from stages.settings import GroupDataError, Platform, read_group_data

KEY = "age1" + "q" * 58
LINE = "whisper:$2b$10$" + "h" * 53


def build(**over):
    return Platform.from_group_data(read_group_data(**over))


# --- knobs -------------------------------------------------------------------------------------------------
def test_defaults_and_sandbox():
    p = build()
    assert p.backup_recipients == () and p.restore_from == "" and p.backup_keep == 7
    sandbox = Platform.from_group_data(read_group_data("sandbox"))
    assert sandbox.backup_pull_dir == ".sandbox/backups"


@pytest.mark.parametrize("over,key,message", [
    ({"backup_recipients": "age1abc"}, "backup_recipients", "a list of keys"),
    ({"backup_recipients": ["ssh-ed25519 AAAA"]}, "backup_recipients[0]", "an age public key"),
    ({"backup_recipients": [KEY, "age1short"]}, "backup_recipients[1]", "an age public key"),
    ({"backup_schedule": "daily\nExecStart=/bin/sh"}, "backup_schedule", "OnCalendar"),
    ({"backup_keep": 0}, "backup_keep", "positive"),
    ({"backup_dir": "relative/dir"}, "backup_dir", "absolute path"),
    ({"backup_push": "host:/x; rm -rf /"}, "backup_push", "user@host:folder"),
    ({"backup_push_key": "id_backup"}, "backup_push_key", "absolute path"),
    ({"backup_uploads": "yes"}, "backup_uploads", "must be bool"),
    ({"restore_from": "a\nb"}, "restore_from", "a file on the deploying machine"),
])
def test_backup_knobs_name_the_key(over, key, message):
    with pytest.raises(GroupDataError, match=re.escape(message)) as err:
        build(**over)
    assert err.value.key == key


def test_good_backup_knobs():
    p = build(backup_recipients=[KEY], backup_push="backup@store.example:whisper/", backup_push_key="/root/.ssh/b",
              backup_schedule="daily", restore_from="~/srv.tar.age")
    assert p.backup_recipients == (KEY,) and p.backup_push == "backup@store.example:whisper/"


def test_host_config_names_what_to_back_up():
    p = build(backup_recipients=[KEY])
    cfg = host_config(p, "whisper", "srv759970")
    assert cfg["platform"] == platform_identity(p) == {
        "domain": "srv759970.hstgr.cloud",
        "vhosts": ["whisper.srv759970.hstgr.cloud", "whisperx.srv759970.hstgr.cloud"]}
    assert [s["env_file"] for s in cfg["services"]] == ["/opt/whisper-faster/.env", "/opt/whisperx/.env"]
    assert cfg["certificates"][0] == {"vhost": "whisper.srv759970.hstgr.cloud",
                                      "cert": "/etc/letsencrypt/live/whisper.srv759970.hstgr.cloud/fullchain.pem",
                                      "key": "/etc/letsencrypt/live/whisper.srv759970.hstgr.cloud/privkey.pem"}
    assert cfg["htpasswd_user"] == "whisper" and cfg["jobs_env_file"] == p.jobs_env_file
    # the monitoring page's name is ours too, and Redis's socket is where the deploy keeps it (never /run/redis)
    assert [c["vhost"] for c in cfg["certificates"]][2:] == [p.monitor_vhost]
    assert cfg["redis_socket"] == f"{p.redis_socket_dir}/redis.sock"
    moved = host_config(build(backup_recipients=[KEY], redis_socket_dir="/run/ours/redis"), "whisper", "srv759970")
    assert moved["redis_socket"] == "/run/ours/redis/redis.sock"
    assert cfg["secret_files"] == {"smtp-password": "/etc/prometheus/whisper-platform/smtp-password"}
    assert json.loads(json.dumps(cfg, sort_keys=True)) == cfg   # what the deploy writes, compared by digest


# --- an archive's checks ------------------------------------------------------------------------------------------
def write_archive(members: dict, domain: str = "example.org", edit=None) -> bytes:
    """A plain archive as the host tool writes it: members (name -> bytes, or ("link", target)), then the manifest."""
    buf = io.BytesIO()
    archive = Archive(buf)
    for name, content in members.items():
        if isinstance(content, tuple):
            archive.add_link(name, content[1])
        else:
            archive.add_bytes(name, content)
    manifest = {"kind": KIND, "format": FORMAT, "host": "srv1", "platform": {"domain": domain, "vhosts": []},
                "created": "2025-01-01T00:00:00Z", "tls_mode": "selfsigned", "options": {"uploads": False},
                "contents": {}, "members": archive.members}
    if edit:
        edit(manifest)
    archive.add_bytes("manifest.json", json.dumps(manifest).encode())
    archive.close()
    return buf.getvalue()


MEMBERS = {
    "secrets/env/faster.env": b"# secrets\nSTT_API_KEYS=sk-old\n",
    "secrets/env/whisperx.env": b"STT_API_KEYS=sk-old\nHF_TOKEN=hf_x\n",
    "secrets/jobs.env": b"REDIS_PASSWORD=pw\nSTT_WEBHOOK_SECRET=ws\n",
    "letsencrypt/archive/w.example.org/fullchain1.pem": b"PEM",
    "letsencrypt/live/w.example.org/fullchain.pem": ("link", "../../archive/w.example.org/fullchain1.pem"),
    "jobs/faster/" + "a" * 32 + "/result.json": b'{"text": "x"}',
}


@pytest.fixture
def operator(tmp_path):
    identity = tmp_path / "identity.txt"
    keygen(identity)
    return identity


def sealed(tmp_path, operator, plain: bytes, name: str = "a.tar.age") -> str:
    path = tmp_path / name
    path.write_bytes(encrypt(plain, public_keys(operator)))
    return str(path)


def test_a_good_archive_opens(tmp_path, operator):
    checked = open_archive(sealed(tmp_path, operator, write_archive(MEMBERS)), str(operator), "example.org")
    assert checked.env("faster") == {"STT_API_KEYS": "sk-old"} and checked.env("whisperx")["HF_TOKEN"] == "hf_x"
    assert checked.certificate("letsencrypt/live/w.example.org/fullchain.pem") == b"PEM"
    assert checked.plain.stat().st_mode & 0o077 == 0 or checked.plain.parent.stat().st_mode & 0o777 == 0o700
    assert "jobs/faster/" + "a" * 32 + "/result.json" not in checked.small   # big or not: it stays in the tar


def test_identity_file_problems(tmp_path, operator):
    path = sealed(tmp_path, operator, write_archive(MEMBERS))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    for identity, message in (("", "restore_identity is empty"), (str(tmp_path / "missing"), "No such file"),
                              (str(empty), "no age identity in it"), (str(bad), "no valid age identity")):
        with pytest.raises(RestoreRefused, match=re.escape(message)):
            open_archive(path, identity, "example.org")
    assert "NOTAKEY" not in str(pytest.raises(RestoreRefused, open_archive, path, str(bad), "example.org").value)


@pytest.mark.parametrize("damage,message", [
    (lambda d: d[: len(d) // 2], "corrupted or truncated"),
    (lambda d: d[:-1], "corrupted or truncated"),
    (lambda d: d[:300] + bytes([d[300] ^ 1]) + d[301:], "corrupted or truncated"),
    (lambda d: b"", "not an age-encrypted backup"),
    (lambda d: b"tar or what?" * 40, "not an age-encrypted backup"),
])
def test_damaged_files_are_refused(tmp_path, operator, damage, message):
    path = tmp_path / "x.tar.age"
    path.write_bytes(damage(encrypt(write_archive(MEMBERS), public_keys(operator))))
    with pytest.raises(RestoreRefused, match=re.escape(message)) as err:
        open_archive(str(path), str(operator), "example.org")
    assert str(err.value).endswith("nothing was changed on the host")


def test_wrong_key_and_other_platform(tmp_path, operator):
    other = tmp_path / "other.txt"
    keygen(other)
    path = sealed(tmp_path, operator, write_archive(MEMBERS))
    with pytest.raises(RestoreRefused, match="wrong key"):
        open_archive(path, str(other), "example.org")
    with pytest.raises(RestoreRefused, match=re.escape("backup of another platform (example.org, host srv1), "
                                                       "not of srv759970.hstgr.cloud")):
        open_archive(path, str(operator), "srv759970.hstgr.cloud")


def _tar(entries) -> bytes:
    """A tar of (TarInfo fields, content) entries, for archives the host tool would never write."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for fields, content in entries:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            info.size = len(content or b"")
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def _manifest(members) -> bytes:
    return json.dumps({"kind": KIND, "format": FORMAT, "platform": {"domain": "example.org"},
                       "members": members}).encode()


@pytest.mark.parametrize("plain,message", [
    (lambda: write_archive(MEMBERS, edit=lambda m: m["members"]["secrets/jobs.env"].update(sha256="0" * 64)),
     "'secrets/jobs.env' differs from its manifest"),
    (lambda: write_archive(MEMBERS, edit=lambda m: m["members"].pop("secrets/jobs.env")),
     "'secrets/jobs.env', which its manifest does not list"),
    (lambda: write_archive(MEMBERS, edit=lambda m: m["members"].update({"redis/dump.rdb": {"size": 1, "sha256": "x"}})),
     "lacks 'redis/dump.rdb'"),
    (lambda: write_archive(MEMBERS, edit=lambda m: m.update(format=99)), "format 99 is not 1"),
    (lambda: write_archive(MEMBERS, edit=lambda m: m.update(kind="something else")), "no whisper-platform backup"),
    (lambda: write_archive({"jobs/../../etc/cron.d/x": b"* * * * * root sh"}), "unsafe name"),
    (lambda: write_archive({"etc/passwd": b"root::0:0"}), "which no backup writes"),
    (lambda: write_archive({"letsencrypt/live/x/cert.pem": ("link", "/etc/shadow")}), "points outside its folder"),
    (lambda: write_archive({"letsencrypt/live/x/cert.pem": ("link", "../../../../etc/shadow")}), "points outside"),
    (lambda: _tar([({"name": "secrets/jobs.env"}, b"x")]), "no manifest"),
    (lambda: _tar([({"name": "manifest.json"}, _manifest({})), ({"name": "secrets/jobs.env"}, b"x")]),
     "after its manifest"),
    (lambda: _tar([({"name": "jobs/x", "type": tarfile.CHRTYPE}, None), ({"name": "manifest.json"}, _manifest({}))]),
     "neither file, folder nor link"),
    (lambda: write_archive(MEMBERS)[:5000], "truncated before its end"),
])
def test_archives_no_backup_writes_are_refused(tmp_path, operator, plain, message):
    with pytest.raises(RestoreRefused, match=re.escape(message)):
        open_archive(sealed(tmp_path, operator, plain()), str(operator), "example.org")


def test_verify_tar_hashes_the_whole_plain_file(tmp_path):
    path = tmp_path / "plain.tar"
    path.write_bytes(write_archive(MEMBERS))
    import hashlib
    assert verify_tar(path).plain_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parse_env_and_rotation(tmp_path):
    assert parse_env("# c\nexport A = 'x'\nB=\"y z\"\nnot a line\n") == {"A": "x", "B": "y z"}
    names = [f"whisper-platform-srv-2025010{d}T000000Z.tar.age" for d in range(1, 6)]
    for name in names + ["other.txt", names[0] + ".part"]:
        (tmp_path / name).write_text("x")
    removed = rotate(str(tmp_path), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:] + ["other.txt"])
    assert names[0] + ".part" in removed


# --- what a restore hands to the other stages -----------------------------------------------------------------------
def _pem(days: float) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_restored_files_are_seen_per_host():
    from stages import web

    with ctx_host.use(StandInHost({})):
        assert restoring.restored("/etc/ssl/x.crt") is None and not web._cert_present("/etc/ssl/x.crt")
        restoring.will_restore("/etc/ssl/x.crt", _pem(30))
        assert web._cert_present("/etc/ssl/x.crt") and web._cert_valid_for_a_day("/etc/ssl/x.crt")
        restoring.will_restore("/etc/ssl/old.crt", _pem(0.5))
        assert web._cert_present("/etc/ssl/old.crt") and not web._cert_valid_for_a_day("/etc/ssl/old.crt")
    other = StandInHost({})
    other.name = "another-host"
    with ctx_host.use(other):
        assert restoring.restored("/etc/ssl/x.crt") is None


def test_htpasswd_line_from_a_backup():
    path, staging = "/etc/nginx/.htpasswd", "/var/lib/whisper-platform/staging"
    facts = [fact(HtpasswdHash, None, path=path, user="whisper")]
    text, commands, host = run_op(htpasswd_user, facts, path=path, user="whisper", password=None,
                                  staging_dir=staging, restored_line=Secret(LINE))
    assert text[0].startswith("install -d") and text[1] == f"upload {staging}/htpasswd-line"
    assert uploaded(commands) == (LINE + "\n").encode()
    assert "restored from the backup" in host.logs[0] and "h" * 53 not in " ".join(text + host.logs)
    with pytest.raises(OperationError, match="give the password for the first run"):
        run_op(htpasswd_user, facts, path=path, user="whisper", password=None, staging_dir=staging)
    # the host's own line wins over a backup's
    text, _, host = run_op(htpasswd_user, [fact(HtpasswdHash, "$2b$10$x", path=path, user="whisper")], path=path,
                           user="whisper", password=None, staging_dir=staging, restored_line=Secret(LINE))
    assert text == [] and "kept" in host.noops[0]


def test_link_pki_round_trip(tmp_path):
    """The deploying machine's link CA and keys (stages/link.py) into a backup and back."""
    pki = tmp_path / "link"
    pki.mkdir()
    (pki / "ca.crt").write_text("CA CERT")
    (pki / "ca.key").write_text("CA KEY")
    (pki / "ca.key").chmod(0o600)
    (pki / "w1.redis-password").write_text("pw")
    blob = pack_pki(pki)
    assert blob == pack_pki(pki)   # the same files, the same bytes: its hash tells a change
    restored = tmp_path / "elsewhere" / "link"
    assert unpack_pki(blob, restored) == ["ca.crt", "ca.key", "w1.redis-password"]
    assert (restored / "ca.key").read_text() == "CA KEY" and (restored / "ca.key").stat().st_mode & 0o777 == 0o600
    assert restored.stat().st_mode & 0o777 == 0o700
    assert unpack_pki(blob, restored) == []   # a second time: nothing to write
    (restored / "ca.crt").write_text("ANOTHER CA")
    with pytest.raises(RestoreRefused, match="already holds another ca.crt"):
        unpack_pki(blob, restored)
    assert pack_pki(tmp_path) is None   # no CA: nothing to back up


def _checked(small: dict, members: dict | None = None):
    from pathlib import Path

    from stages.backup_archive import CheckedArchive

    manifest = {"members": members or {name: {"size": len(v), "sha256": "x"} for name, v in small.items()}}
    return CheckedArchive(path=Path("/backups/a.tar.age"), sha256="s", plain=Path("/tmp/x"), plain_sha256="p",
                          manifest=manifest, small=small)


def test_the_archives_secrets_become_this_runs_values():
    from stages.backup import _secrets_from

    p = build()
    checked = _checked({"secrets/env/faster.env": b"STT_API_KEYS=sk-old,sk-second\n",
                        "secrets/env/whisperx.env": b"STT_API_KEYS=sk-old,sk-second\nHF_TOKEN=hf_old\n",
                        "secrets/htpasswd": (LINE + "\n").encode(), "secrets/files/smtp-password": b"smtp-old\n"})
    with ctx_host.use(StandInHost({})):
        secrets = {"WHISPER_BASIC_AUTH_USER": Secret("whisper"), "WHISPER_BASIC_AUTH_PASSWORD": None,
                   "WHISPER_API_KEY": None, "HF_TOKEN": None, "WHISPER_SMTP_PASSWORD": None}
        notes = _secrets_from(checked, p, secrets)
        assert secrets["WHISPER_API_KEY"].reveal() == "sk-old,sk-second" and secrets["HF_TOKEN"].reveal() == "hf_old"
        assert secrets["WHISPER_SMTP_PASSWORD"].reveal() == "smtp-old"
        assert restoring.restored_htpasswd(p.htpasswd_file, "whisper").reveal() == LINE
        assert notes == ["the API keys", "the HF token", "the alert e-mails' SMTP password",
                         "whisper's basic-auth line"]
        assert "sk-old" not in " ".join(notes)
    other = StandInHost({})
    other.name = "given-values"
    with ctx_host.use(other):
        # what the environment gives still wins; a password given means no line from the archive
        secrets = {"WHISPER_BASIC_AUTH_USER": Secret("whisper"), "WHISPER_BASIC_AUTH_PASSWORD": Secret("new"),
                   "WHISPER_API_KEY": Secret("sk-new"), "HF_TOKEN": Secret(""), "WHISPER_SMTP_PASSWORD": Secret("s")}
        assert _secrets_from(checked, p, secrets) == []
        assert secrets["WHISPER_API_KEY"].reveal() == "sk-new" and secrets["HF_TOKEN"].reveal() == ""
        assert restoring.restored_htpasswd(p.htpasswd_file, "whisper") is None
        # another user's line is not ours to restore
        secrets = {"WHISPER_BASIC_AUTH_USER": Secret("someone"), "WHISPER_BASIC_AUTH_PASSWORD": None,
                   "WHISPER_API_KEY": None, "HF_TOKEN": None}
        _secrets_from(checked, p, secrets)
        assert restoring.restored_htpasswd(p.htpasswd_file, "someone") is None


def test_an_unsafe_secret_in_an_archive_is_refused():
    from stages.backup import _secrets_from

    checked = _checked({"secrets/env/faster.env": b"STT_API_KEYS=sk-bad\"key\n"})
    with ctx_host.use(StandInHost({})):
        secrets = {"WHISPER_BASIC_AUTH_USER": Secret("whisper"), "WHISPER_BASIC_AUTH_PASSWORD": None,
                   "WHISPER_API_KEY": None, "HF_TOKEN": None}
        with pytest.raises(RestoreRefused, match="a secret in the archive is unusable: WHISPER_API_KEY"):
            _secrets_from(checked, build(), secrets)


@pytest.mark.parametrize("tls_mode", ["selfsigned", "letsencrypt"])
def test_restored_certificates_are_announced_to_the_web_stage(tls_mode):
    from stages import web
    from stages.backup import _certificates_from

    p = build(tls_mode=tls_mode)
    pem = _pem(60)
    vhosts = [site.vhost for site in web.sites(p)]
    assert len(vhosts) > len(p.services)   # the monitoring page has its certificate too
    if tls_mode == "selfsigned":
        small = {f"tls/selfsigned/{vhost}.crt": pem for vhost in vhosts}
        members = None
    else:
        small = {f"letsencrypt/archive/{vhost}/fullchain1.pem": pem for vhost in vhosts}
        members = {**{name: {"size": 1, "sha256": "x"} for name in small},
                   **{f"letsencrypt/live/{vhost}/fullchain.pem": {"link": f"../../archive/{vhost}/fullchain1.pem"}
                      for vhost in vhosts}}
    host = StandInHost({})
    host.name = f"certs-{tls_mode}"
    with ctx_host.use(host):
        notes = _certificates_from(_checked(small, members), p)
        assert notes == [f"the certificates of {', '.join(vhosts)}"]
        for site in web.sites(p):
            cert = web.cert_paths(site, p)[0]
            assert web._cert_present(cert) and web._cert_valid_for_a_day(cert)
        assert web._certificates_present(p)
