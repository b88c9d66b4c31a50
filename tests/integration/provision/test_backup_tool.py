"""The host-side backup tool (stages/host/backup.py) for real, in a temporary folder laid out like a host: Debian's
python3 (standard library only), the real `age`, a real redis-server on a unix socket; then the deploying machine's
checks (stages/backup_archive.py) on what it wrote, and its restore of the files into an empty "fresh host".
No sandbox host needed: the systemd and Redis-loading parts run in the e2e rebuild (tests/e2e/test_rebuild.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.jobs_support import RedisServer, needs_redis

from stages.backup_archive import keygen, open_archive, public_keys, sha256_file

REPO = Path(__file__).resolve().parents[3]
TOOL = REPO / "stages" / "host" / "backup.py"
PYTHON = "/usr/bin/python3"   # the host's Python: nothing but the standard library
FINISHED, QUEUED, FAILED = "a" * 32, "b" * 32, "c" * 32

pytestmark = [needs_redis, pytest.mark.skipif(not shutil.which("age"), reason="age is not installed (make docker)")]


def _self_signed(cert: Path, key: Path, name: str) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)


def _letsencrypt(root: Path, vhost: str) -> None:
    """certbot's layout for one name: live/ links into archive/, a renewal config naming its account."""
    archive, live = root / "archive" / vhost, root / "live" / vhost
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    _self_signed(archive / "cert1.pem", archive / "privkey1.pem", vhost)
    shutil.copy(archive / "cert1.pem", archive / "fullchain1.pem")
    shutil.copy(archive / "cert1.pem", archive / "chain1.pem")
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (live / f"{kind}.pem").symlink_to(f"../../archive/{vhost}/{kind}1.pem")
    (live / "README").write_text("certbot's readme\n")
    (root / "renewal").mkdir(exist_ok=True)
    (root / "renewal" / f"{vhost}.conf").write_text(f"version = 2.1.0\narchive_dir = {archive}\n[renewalparams]\n"
                                                     "account = 0123456789abcdef\nauthenticator = webroot\n")
    account = root / "accounts" / "acme-v02.api.letsencrypt.org" / "directory" / "0123456789abcdef"
    account.mkdir(parents=True, exist_ok=True)
    (account / "private_key.json").write_text('{"kty": "RSA"}')
    other = root / "accounts" / "acme-v02.api.letsencrypt.org" / "directory" / "fedcba9876543210"
    other.mkdir(parents=True, exist_ok=True)
    (other / "private_key.json").write_text('{"another": "tenant"}')


@pytest.fixture
def host(tmp_path):
    """A host's files under tmp_path, its Redis on a unix socket, and whisper-backup's settings for them."""
    root = tmp_path / "host"
    redis = RedisServer((tmp_path / "redis").resolve(), unixsocket=True)
    (tmp_path / "redis").mkdir()
    redis.start()
    identity = tmp_path / "operator" / "identity.txt"
    keygen(identity)
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "recipients").write_text(public_keys(identity)[0] + "\n")
    for svc, env in (("faster", "STT_API_KEYS=sk-old-key\n"), ("whisperx", "STT_API_KEYS=sk-old-key\nHF_TOKEN=hf_x\n")):
        (root / svc).mkdir()
        (root / svc / ".env").write_text("# secrets\n" + env)
    (root / "etc" / "jobs.env").write_text(f"REDIS_PASSWORD={redis.password}\nSTT_WEBHOOK_SECRET=whsec\n")
    (root / "etc" / "auth.conf").write_text('"~^Bearer sk-old-key$" 1;\n')
    (root / "etc" / "smtp-password").write_text("smtp-secret")
    (root / "etc" / "htpasswd").write_text("alice:$apr1$others\nwhisper:$2b$10$ourhash\nbob:$2y$theirs\n")
    (root / "tls").mkdir()
    for vhost in ("whisper.example.org", "whisperx.example.org"):
        _self_signed(root / "tls" / f"{vhost}.crt", root / "tls" / f"{vhost}.key", vhost)
    jobs = root / "jobs" / "faster"
    for job, files in ((FINISHED, {"audio": b"A" * 1000, "result.json": b'{"text": "done"}'}),
                       (QUEUED, {"audio": b"Q" * 2000}), (FAILED, {"audio": b"F" * 3000}),
                       ("d" * 32, {"audio": b"D", "result.json.part": b"{half"})):
        (jobs / job).mkdir(parents=True)
        for name, data in files.items():
            (jobs / job / name).write_bytes(data)
    (root / "models" / "tiny.en").mkdir(parents=True)
    voices = root / "speakers" / "whisperx" / "caller-1"   # enrolled voices: embeddings per caller
    voices.mkdir(parents=True)
    (voices / "diane.json").write_text('{"name": "diane", "embeddings": [[0.1, 0.2]]}')
    (root / "models" / "tiny.en" / "model.bin").write_bytes(b"M" * 4096)
    (root / "autostart.json").write_text(json.dumps({"services": {
        "whisper.example.org": {"name": "ours"}, "blog.example.org": {"name": "not ours"}}}))
    cli = ["redis-cli", "--no-auth-warning", "-s", str(redis.socket)]
    env = dict(os.environ, REDISCLI_AUTH=redis.password)
    for job, status in ((QUEUED, "queued"), (FAILED, "failed"), (FINISHED, "finished")):
        subprocess.run(cli + ["HSET", f"rq:job:{job}", "status", status], env=env, check=True, capture_output=True)
    subprocess.run(cli + ["RPUSH", "rq:queue:stt-faster", QUEUED], env=env, check=True, capture_output=True)
    cfg = {
        "host": "srv1", "platform": {"domain": "example.org", "vhosts": ["whisper.example.org"]},
        "backup_dir": str(root / "backups"), "keep": 2, "recipients_file": str(root / "etc" / "recipients"),
        "push": "", "push_key": "", "uploads": False, "models": False, "work_dir": str(root / "work"),
        "services": [{"key": s, "env_file": str(root / s / ".env")} for s in ("faster", "whisperx")],
        "jobs_enabled": True, "jobs_env_file": str(root / "etc" / "jobs.env"), "jobs_dir": str(root / "jobs"),
        "redis_socket": str(redis.socket), "auth_map": str(root / "etc" / "auth.conf"),
        "secret_files": {"smtp-password": str(root / "etc" / "smtp-password")},
        "htpasswd_file": str(root / "etc" / "htpasswd"), "htpasswd_user": "whisper",
        "tls_mode": "selfsigned", "letsencrypt_dir": str(root / "letsencrypt"),
        "certificates": [{"vhost": v, "cert": str(root / "tls" / f"{v}.crt"), "key": str(root / "tls" / f"{v}.key")}
                         for v in ("whisper.example.org", "whisperx.example.org")],
        "models_dir": str(root / "models"), "speakers_dir": str(root / "speakers"),
        "autostart_config": str(root / "autostart.json"),
        "autostart_hosts": ["whisper.example.org", "whisperx.example.org"], "link_pki": str(root / "work" / "pki.age"),
    }
    yield {"root": root, "cfg": cfg, "identity": identity, "redis": redis, "tmp": tmp_path}
    redis.stop()


def create(host, **changes) -> dict:
    cfg = {**host["cfg"], **changes}
    path = host["tmp"] / "backup.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([PYTHON, str(TOOL), "create", "--config", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_backup_holds_what_the_platform_cannot_recreate(host):
    result = create(host)
    archive = Path(result["path"])
    assert archive.stat().st_mode & 0o777 == 0o600 and oct(archive.parent.stat().st_mode & 0o777) == "0o700"
    assert result["sha256"] == sha256_file(archive) and result["bytes"] == archive.stat().st_size
    assert b"sk-old-key" not in archive.read_bytes() and b"whsec" not in archive.read_bytes()   # encrypted
    checked = open_archive(str(archive), str(host["identity"]), "example.org")
    small, members, contents = checked.small, checked.manifest["members"], checked.manifest["contents"]
    assert checked.env("faster")["STT_API_KEYS"] == "sk-old-key" and checked.env("whisperx")["HF_TOKEN"] == "hf_x"
    assert b"STT_WEBHOOK_SECRET=whsec" in small["secrets/jobs.env"] and "secrets/auth-map.conf" in small
    assert small["secrets/files/smtp-password"] == b"smtp-secret"
    assert small["secrets/htpasswd"] == b"whisper:$2b$10$ourhash\n"   # our line only, never the others'
    assert {"tls/selfsigned/whisper.example.org.crt", "tls/selfsigned/whisper.example.org.key"} <= set(members)
    assert members["redis/dump.rdb"]["size"] > 0 and contents["redis_bytes"] == members["redis/dump.rdb"]["size"]
    # results always; the audio of a queued job (it needs it to run); finished and failed jobs' audio left out
    jobs = {name for name in members if name.startswith("jobs/faster/") and "sha256" in members[name]}
    assert jobs == {f"jobs/faster/{FINISHED}/result.json", f"jobs/faster/{QUEUED}/audio"}
    assert contents["jobs"]["faster"] == {"jobs": 4, "pending": 1, "results": 1, "uploads": 1, "uploads_left_out": 3}
    models = json.loads(small["models/manifest.json"])
    assert models == [{"name": "tiny.en", "bytes": 4096, "files": [{"path": "model.bin", "size": 4096}]}]
    assert not any(name.startswith("models/store/") for name in members)
    assert json.loads(small["autostart/entries.json"]) == {"whisper.example.org": {"name": "ours"}}
    assert members["speakers/whisperx/caller-1/diane.json"]["size"] > 0 and contents["speakers"] == 1
    assert checked.manifest["host"] == "srv1" and checked.manifest["platform"]["domain"] == "example.org"
    # with the knobs on: every upload and the models' files
    full = open_archive(create(host, uploads=True, models=True)["path"], str(host["identity"]), "example.org")
    assert f"jobs/faster/{FINISHED}/audio" in full.manifest["members"]
    assert full.manifest["members"]["models/store/tiny.en/model.bin"]["size"] == 4096


def test_rotation_keeps_the_newest(host):
    names = [create(host)["name"] for _ in range(3)]
    assert len(set(names)) == 3
    assert sorted(os.listdir(host["cfg"]["backup_dir"])) == sorted(names[1:])
    last = json.loads((Path(host["cfg"]["work_dir"]) / "last-success.json").read_text())
    assert last["name"] == names[-1] and last["bytes"] > 0


def test_letsencrypt_lineages_and_their_account(host):
    le = host["root"] / "letsencrypt"
    for vhost in ("whisper.example.org", "whisperx.example.org"):
        _letsencrypt(le, vhost)
    checked = open_archive(create(host, tls_mode="letsencrypt")["path"], str(host["identity"]), "example.org")
    members = checked.manifest["members"]
    assert members["letsencrypt/live/whisper.example.org/fullchain.pem"] == {
        "link": "../../archive/whisper.example.org/fullchain1.pem"}
    assert checked.certificate("letsencrypt/live/whisper.example.org/fullchain.pem") == \
        (le / "archive/whisper.example.org/fullchain1.pem").read_bytes()
    assert "letsencrypt/renewal/whisperx.example.org.conf" in members
    accounts = {n for n in members if n.startswith("letsencrypt/accounts/")}
    assert any("0123456789abcdef/private_key.json" in n for n in accounts)
    assert not any("fedcba9876543210" in n for n in accounts)   # another tenant's account stays out

    # the restore side of the host tool puts the lineages back, links and modes included
    fresh = host["tmp"] / "fresh"
    targets = fresh / "targets.json"
    fresh.mkdir()
    targets.write_text(json.dumps({
        "selfsigned_dir": str(fresh / "tls"), "letsencrypt_dir": str(fresh / "letsencrypt"),
        "jobs_dir": str(fresh / "jobs"), "models_dir": str(fresh / "models"),
        "speakers_dir": str(fresh / "speakers"), "app_uid": os.getuid(),
        "dump": str(fresh / "work" / "dump.rdb"), "marker": str(fresh / "restore.json"),
        "archive_name": checked.name, "archive_sha256": checked.sha256}))
    proc = subprocess.run([PYTHON, str(TOOL), "restore-files", "--archive", str(checked.plain), "--sha256",
                           checked.plain_sha256, "--targets", str(targets)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    live = fresh / "letsencrypt/live/whisper.example.org/privkey.pem"
    assert live.is_symlink() and live.read_bytes() == (le / "archive/whisper.example.org/privkey1.pem").read_bytes()
    assert (fresh / f"jobs/faster/{QUEUED}/audio").read_bytes() == b"Q" * 2000
    assert (fresh / f"jobs/faster/{FINISHED}/result.json").read_bytes() == b'{"text": "done"}'
    assert (fresh / "work" / "dump.rdb").stat().st_mode & 0o777 == 0o600
    assert "diane" in (fresh / "speakers/whisperx/caller-1/diane.json").read_text()   # enrolled voices back
    marker = json.loads((fresh / "restore.json").read_text())
    assert marker["sha256"] == checked.sha256 and marker["files"]
    # the host checks the upload against the deploy's hash first
    bad = subprocess.run([PYTHON, str(TOOL), "restore-files", "--archive", str(checked.plain), "--sha256", "0" * 64,
                          "--targets", str(targets)], capture_output=True, text=True)
    assert bad.returncode == 1 and "differs from the one the deploy checked" in bad.stderr
