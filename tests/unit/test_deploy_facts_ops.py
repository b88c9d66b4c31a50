"""The deploy's own facts and operations (stages.ops), in pyinfra's own test style: a fact is its
command in, the host's output, the expected value; an operation is the facts it reads in, the
commands it yields out. The operations run against a stand-in host that answers facts from a
table (pyinfra's own operation tests do the same); what the commands do on a real host is
tested by tests/e2e (sandbox host) and, for the host-side scripts, by running them here on files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from pyinfra.api import FileUploadCommand
from pyinfra.context import ctx_host
from pyinfra.facts.files import File, Sha256File

from stages.nginx_conf import parse_dump
from stages.ops import (ENV_SCRIPT, CommandSucceeds, ComposeFlavour, ContainerImage, EnvFileDigest,
                        NginxServerBlocks, RawFile, TreeState, compose_command, env_line_digest, env_secret_file,
                        secret_file, synced_tree, tree_state)
from stages.secrets_env import Secret
from support.pyinfra_ops import StandInHost, fact, run_op, uploaded

SECRET = "s3cret-value"


# --- facts: command in, output, expected value ---------------------------------------------------
def test_command_succeeds():
    assert CommandSucceeds().command("test -f /x") == \
        "if (test -f /x) >/dev/null 2>&1; then echo yes; else echo no; fi"
    assert CommandSucceeds().process(["yes"]) is True
    assert CommandSucceeds().process(["no"]) is False
    # run for real: the command's own output never reaches the fact
    for command, expected in (("echo noisy; true", True), ("echo noisy; false", False)):
        out = subprocess.run(["sh", "-c", CommandSucceeds().command(command)], capture_output=True, text=True).stdout
        assert CommandSucceeds().process(out.splitlines()) is expected


@pytest.mark.parametrize("output,flavour,command", [
    (["v2"], "v2", "docker compose"),
    (["v1"], "v1", "docker-compose"),
    (["pkg-v2"], "pkg-v2", "docker compose"),   # not there yet: the packages stage installs docker-compose-v2
    (["pkg-v1"], "pkg-v1", "docker-compose"),
])
def test_compose_flavour(output, flavour, command):
    fact = ComposeFlavour()
    assert fact.command().startswith("if docker compose version >/dev/null 2>&1; then echo v2; ")
    assert fact.process(output) == flavour
    assert compose_command(flavour) == command


@pytest.mark.parametrize("content", ['{"services": {}}\n', '{\n\t"a": "é"\n}', ""])
def test_raw_file_keeps_bytes(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    out = subprocess.run(["sh", "-c", RawFile().command(str(path))], capture_output=True, text=True).stdout
    assert RawFile().process(out.splitlines()) == content
    assert RawFile().process(["absent"]) is None
    assert RawFile().command("/a b") == "if [ -f '/a b' ]; then echo present; base64 -w0 '/a b'; echo; else echo absent; fi"


@pytest.mark.parametrize("output,expected", [
    ([], None),
    (["whisper-faster:src-0123456789ab true"], {"image": "whisper-faster:src-0123456789ab", "running": True}),
    (["fedirz/faster-whisper-server:latest-cpu false"], {"image": "fedirz/faster-whisper-server:latest-cpu", "running": False}),
])
def test_container_image(output, expected):
    assert ContainerImage().command("faster-whisper") == \
        "docker inspect -f '{{.Config.Image}} {{.State.Running}}' faster-whisper 2>/dev/null || true"
    assert ContainerImage().process(output) == expected


def test_env_file_digest_runs_on_the_host_and_returns_no_value(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"# header\nexport STT_API_KEYS = \"{SECRET}\"\nHF_TOKEN=\n")
    out = subprocess.run(["sh", "-c", EnvFileDigest().command(str(env))], capture_output=True, text=True).stdout
    assert SECRET not in out
    assert EnvFileDigest().process(out.splitlines()) == [
        [None, env_line_digest("# header")], ["STT_API_KEYS", env_line_digest(f"STT_API_KEYS={SECRET}")],
        ["HF_TOKEN", env_line_digest("HF_TOKEN=")]]
    assert EnvFileDigest().process([]) is None   # no file
    missing = subprocess.run(["sh", "-c", EnvFileDigest().command(str(tmp_path / "none"))], capture_output=True,
                             text=True).stdout
    assert EnvFileDigest().process(missing.splitlines()) is None


def test_nginx_server_blocks_parses_on_the_host_and_returns_no_content(tmp_path):
    dump = ("# configuration file /etc/nginx/sites-enabled/x:\n"
            "server { listen 443 ssl; server_name whisper.example; }\n"
            "# configuration file /etc/nginx/conf.d/whisper-platform-auth.conf:\n"
            f'map $http_authorization $k {{ "~^Bearer {SECRET}$" 1; }}\n')
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n" + dump + "EOF\n")
    fake.chmod(0o755)
    command = NginxServerBlocks().command(nginx=str(fake))
    assert SECRET not in command
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    assert SECRET not in out
    assert NginxServerBlocks().process(out.splitlines()) == parse_dump(dump) == [
        {"file": "/etc/nginx/sites-enabled/x", "line": 1, "listen": ["443 ssl"], "ports": [443],
         "names": ["whisper.example"], "ssl": True}]
    assert NginxServerBlocks().process([]) == []


# --- operations: facts in, commands out (support.pyinfra_ops) -----------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PATH = "/etc/whisper-platform/secret"
STAGING = "/var/lib/whisper-platform/staging"
FILE_OK = {"mode": 600, "user": "root", "group": "root"}


def test_secret_file_creates_through_the_staging_folder():
    text, commands, host = run_op(secret_file, [fact(File, None, path=PATH)],
                                  path=PATH, content=Secret(SECRET), staging_dir=STAGING)
    assert text == [
        f"install -d -m 700 -o root -g root {STAGING}",
        f"upload {STAGING}/secret.new",
        f"chown root:root {STAGING}/secret.new",
        f"chmod 600 {STAGING}/secret.new",
        f"mv -f {STAGING}/secret.new {PATH}",
    ]
    assert uploaded(commands) == SECRET.encode()
    assert SECRET not in " ".join(text + host.logs) and "Will create" in host.logs[0]


def test_secret_file_up_to_date_yields_nothing():
    facts = [fact(File, FILE_OK, path=PATH), fact(Sha256File, _sha(SECRET), path=PATH)]
    text, _, host = run_op(secret_file, facts, path=PATH, content=Secret(SECRET), staging_dir=STAGING)
    assert text == [] and "up to date" in host.noops[0]


def test_secret_file_same_content_wrong_mode_fixes_only_the_mode():
    facts = [fact(File, {**FILE_OK, "mode": 644}, path=PATH), fact(Sha256File, _sha(SECRET), path=PATH)]
    text, _, _ = run_op(secret_file, facts, path=PATH, content=Secret(SECRET), staging_dir=STAGING)
    assert text == [f"chown root:root {PATH}", f"chmod 600 {PATH}"]


def test_secret_file_changed_content_is_replaced_without_a_diff():
    facts = [fact(File, FILE_OK, path=PATH), fact(Sha256File, _sha("old"), path=PATH)]
    text, commands, host = run_op(secret_file, facts, path=PATH, content=Secret(SECRET), staging_dir=STAGING,
                                  mode="640", group="redis")
    assert text[-3:] == [f"chown root:redis {STAGING}/secret.new", f"chmod 640 {STAGING}/secret.new",
                         f"mv -f {STAGING}/secret.new {PATH}"]
    assert "Will update" in host.logs[0] and SECRET not in host.logs[0] and "old" not in host.logs[0]


ENV = "/opt/whisperx/.env"
HEADER = "# secrets"


def _env_digests(*lines):
    return [[line.split("=", 1)[0] if "=" in line else None, env_line_digest(line)] for line in lines]


def test_env_secret_file_creates_and_merges_on_the_host():
    values = {"STT_API_KEYS": Secret("k1"), "HF_TOKEN": None}
    text, commands, host = run_op(env_secret_file, [fact(EnvFileDigest, None, path=ENV)],
                                  path=ENV, header=HEADER, values=values, staging_dir=STAGING)
    base = f"{STAGING}/.env-{hashlib.sha256(ENV.encode()).hexdigest()[:8]}"
    assert text[0] == f"install -d -m 700 -o root -g root {STAGING}"
    assert text[1:3] == [f"upload {base}.given", f"chmod 600 {base}.given"]
    assert text[3].startswith("python3 -c ") and text[3].endswith(f"merge {ENV} {base}.given {base}.new STT_API_KEYS HF_TOKEN")
    assert text[4:] == [f"rm -f {base}.given", f"chown root:root {base}.new", f"chmod 600 {base}.new",
                        f"mv -f {base}.new {ENV}"]
    # only the given values travel; the absent HF_TOKEN is kept from the host by the merge
    assert uploaded(commands) == f"{HEADER}\nSTT_API_KEYS=k1\n".encode()
    assert "k1" not in " ".join(text + host.logs)


def test_env_secret_file_up_to_date_and_absent_value_kept_yields_nothing():
    current = _env_digests(HEADER, "STT_API_KEYS=k1", "HF_TOKEN=hf_on_host")
    facts = [fact(EnvFileDigest, current, path=ENV), fact(File, FILE_OK, path=ENV)]
    text, _, host = run_op(env_secret_file, facts, path=ENV, header=HEADER,
                           values={"STT_API_KEYS": Secret("k1"), "HF_TOKEN": None}, staging_dir=STAGING)
    assert text == [] and "up to date" in host.noops[0]


def test_env_secret_file_explicit_empty_clears_a_kept_value():
    current = _env_digests(HEADER, "STT_API_KEYS=k1", "HF_TOKEN=hf_on_host")
    facts = [fact(EnvFileDigest, current, path=ENV), fact(File, FILE_OK, path=ENV)]
    text, commands, host = run_op(env_secret_file, facts, path=ENV, header=HEADER,
                                  values={"STT_API_KEYS": Secret("k1"), "HF_TOKEN": Secret("")}, staging_dir=STAGING)
    assert text[-1] == f"mv -f {STAGING}/.env-{hashlib.sha256(ENV.encode()).hexdigest()[:8]}.new {ENV}"
    assert uploaded(commands) == f"{HEADER}\nSTT_API_KEYS=k1\nHF_TOKEN=\n".encode()
    assert "Will update" in host.logs[0]


def test_env_secret_file_wrong_owner_fixes_only_owner_and_mode():
    current = _env_digests(HEADER, "STT_API_KEYS=k1")
    facts = [fact(EnvFileDigest, current, path=ENV), fact(File, {**FILE_OK, "user": "whisper-app"}, path=ENV)]
    text, _, _ = run_op(env_secret_file, facts, path=ENV, header=HEADER, values={"STT_API_KEYS": Secret("k1")},
                        staging_dir=STAGING)
    assert text == [f"chown root:root {ENV}", f"chmod 600 {ENV}"]


def test_env_secret_file_commands_do_what_they_say_on_files(tmp_path):
    """The yielded commands, run here on files in place of the host's, give the merged .env."""
    env = tmp_path / ".env"
    env.write_text("# old header\nHF_TOKEN=hf_on_host\nSTT_API_KEYS=old\n")
    digest = subprocess.run([sys.executable, "-c", ENV_SCRIPT, "digest", str(env)], capture_output=True, text=True,
                            check=True).stdout
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)   # what the first command does, as root, on the host
    values = {"STT_API_KEYS": Secret("new"), "HF_TOKEN": None}
    text, commands, _ = run_op(env_secret_file, [fact(EnvFileDigest, json.loads(digest), path=str(env))],
                               path=str(env), header=HEADER, values=values, staging_dir=str(staging))
    for cmd, line in zip(commands, text):
        if isinstance(cmd, FileUploadCommand):
            with open(cmd.dest, "wb") as f:
                f.write(cmd.src.getvalue())
        elif not line.startswith(("install -d", "chown")):   # root-only steps: not what this checks
            subprocess.run(["sh", "-c", line.replace("python3 -c", f"{sys.executable} -c", 1)], check=True)
    assert env.read_text() == f"{HEADER}\nSTT_API_KEYS=new\nHF_TOKEN=hf_on_host\n"
    assert oct(env.stat().st_mode & 0o777) == "0o600"


# --- a folder uploaded whole: one command asks about all of it ------------------------------------------------
def _tree(root):
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("print('a')\n")
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (root / "pkg" / "run.sh").chmod(0o755)
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (root / "key.pem").write_text("not uploaded\n")
    (root / "link").symlink_to("pkg/a.py")


def _tree_fact(path) -> dict | None:
    out = subprocess.run(["sh", "-c", TreeState().command(str(path))], capture_output=True, text=True, check=True)
    return TreeState().process(out.stdout.splitlines())


def test_tree_state_is_what_the_host_reports_for_a_synced_copy(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _tree(src)
    wanted = tree_state(str(src), exclude=["*.pyc", "*.pem"], exclude_dir=["__pycache__", "*/__pycache__"])
    assert sorted(wanted) == ["link", "pkg/a.py", "pkg/run.sh"]
    assert wanted["pkg/run.sh"].startswith("755 ") and wanted["pkg/a.py"].startswith("644 ")
    assert wanted["link"] == "-> pkg/a.py"
    # what files.sync leaves on a host: the same files and modes, no excluded ones
    (dest / "pkg").mkdir(parents=True)
    for rel in ("pkg/a.py", "pkg/run.sh"):
        (dest / rel).write_bytes((src / rel).read_bytes())
        (dest / rel).chmod((src / rel).stat().st_mode & 0o777)
    (dest / "link").symlink_to("pkg/a.py")
    assert _tree_fact(dest) == wanted
    # a changed byte, a changed mode or a stray file is seen
    (dest / "pkg" / "a.py").write_text("print('b')\n")
    assert _tree_fact(dest) != wanted
    (dest / "pkg" / "a.py").write_bytes((src / "pkg" / "a.py").read_bytes())
    (dest / "pkg" / "run.sh").chmod(0o700)
    assert _tree_fact(dest)["pkg/run.sh"].startswith("700 ")
    # a forced mode is what the host must show
    assert tree_state(str(src), exclude=["*.pyc", "*.pem"], mode="644")["pkg/run.sh"].startswith("644 ")
    assert _tree_fact(tmp_path / "missing") is None


def test_synced_tree_declares_nothing_when_the_host_has_it_all(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    kwargs = dict(exclude=["*.pyc", "*.pem"], exclude_dir=["__pycache__", "*/__pycache__"])
    on_host = dict(tree_state(str(src), **kwargs))
    # the running proxy leaves bytecode on the host: excluded files are the host's to keep
    on_host["pkg/__pycache__/a.cpython-311.pyc"] = "644 00"
    host = StandInHost({fact(TreeState, on_host, path="/opt/x")[0]: on_host})
    with ctx_host.use(host):
        assert synced_tree("Code", str(src), "/opt/x", **kwargs) is None
