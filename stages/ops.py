"""Our own facts and operations, where pyinfra's would print a secret or always report a change."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import posixpath
import shlex
from fnmatch import fnmatch
from pathlib import Path
from typing import cast

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.api.util import get_path_permissions_mode
from pyinfra.facts.files import File, Sha256File

from stages.secrets_env import Secret


# --- facts ----------------------------------------------------------------------------------
def text_source(text: str) -> io.StringIO:
    """Rendered text as the file-like object files.put takes."""
    return io.StringIO(text)


class CommandSucceeds(FactBase):
    """True when the shell command exits 0 (its output is discarded)."""

    def command(self, command):
        return f"if ({command}) >/dev/null 2>&1; then echo yes; else echo no; fi"

    def process(self, output):
        return "".join(output).strip() == "yes"


class ComposeFlavour(FactBase):
    """How this host runs Compose: "v2" (`docker compose`), "v1" (`docker-compose`), or
    what to install when neither exists: "pkg-v2" (docker-compose-v2) or "pkg-v1"."""

    def command(self):
        return (
            "if docker compose version >/dev/null 2>&1; then echo v2; "
            "elif command -v docker-compose >/dev/null 2>&1; then echo v1; "
            "elif apt-cache show docker-compose-v2 >/dev/null 2>&1; then echo pkg-v2; "
            "else echo pkg-v1; fi"
        )

    def process(self, output):
        return "".join(output).strip()


class RawFile(FactBase):
    """A file's exact bytes (None if absent): the JSON config merge keeps them byte-for-byte."""

    def command(self, path):
        q = shlex.quote(path)
        return f"if [ -f {q} ]; then echo present; base64 -w0 {q}; echo; else echo absent; fi"

    def process(self, output):
        if not output or output[0].strip() != "present":
            return None
        return base64.b64decode("".join(output[1:]).strip()).decode()


def compose_command(flavour: str) -> str:
    return "docker compose" if flavour in ("v2", "pkg-v2") else "docker-compose"


# --- operations -------------------------------------------------------------------------------
class StreamedCommand(StringCommand):
    """A command whose output reaches the deploy's output line by line as it runs, at every
    verbosity: pyinfra shows command output only with -vvv, which would also print facts (secrets
    among them). For long, quiet-by-design commands that print only progress lines (image builds)."""

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        return host.run_shell_command(self, print_output=True, print_input=state.print_input, **connector_arguments)


@operation(is_idempotent=False)
def streamed_shell(command: str):
    """Run one shell command, its progress lines printed as they come (see StreamedCommand)."""
    yield StreamedCommand(command)


@operation()
def secret_file(
    path: str,
    content: Secret,
    staging_dir: str,
    mode: str = "600",
    user: str = "root",
    group: str = "root",
):
    """Write a file whose content is secret: compared by checksum, never diffed or printed.

    The upload lands in a root-only staging folder, gets its owner and mode there, and is
    then moved into place, so the secret is never readable by others, not even briefly.
    """
    data = content.reveal().encode()
    desired_sum = hashlib.sha256(data).hexdigest()
    remote = host.get_fact(File, path=path)
    same = remote and host.get_fact(Sha256File, path=path) == desired_sum
    if same:
        assert remote   # `same` is falsy when the file is absent
        if str(remote.get("mode")) != mode.lstrip("0") or remote.get("user") != user or remote.get("group") != group:
            yield StringCommand("chown", f"{user}:{group}", path)
            yield StringCommand("chmod", mode, path)
        else:
            host.noop(f"{path} is up to date (secret, contents not shown)")
        return
    host.log(f"{'Will update' if remote else 'Will create'} {path} (secret, contents not shown)")
    staged = posixpath.join(staging_dir, posixpath.basename(path) + ".new")
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", staging_dir)
    yield FileUploadCommand(io.BytesIO(data), staged, remote_temp_filename=staged + ".part")
    yield StringCommand("chown", f"{user}:{group}", staged)
    yield StringCommand("chmod", mode, staged)
    yield StringCommand("mv", "-f", staged, path)


# --- takeover of a hand-made host ---------------------------------------------------------
def _remote_python(source: str, *args: str) -> str:
    """A `python3 -c` command running `source` (no secrets in it) with these arguments."""
    encoded = base64.b64encode(source.encode()).decode()
    quoted = " ".join(shlex.quote(a) for a in args)
    return f"python3 -c 'import base64;exec(base64.b64decode(\"{encoded}\"))' {quoted}"


class NginxServerBlocks(FactBase):
    """Every server block nginx loads (`nginx -T`): file, line, ports, names. Parsed on the host
    (stages/nginx_conf.py), so no file content comes back: `nginx -T` also dumps our auth map."""

    def command(self, nginx="nginx"):
        source = (Path(__file__).parent / "nginx_conf.py").read_text()
        return ("if command -v nginx >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then "
                f"{nginx} -T 2>/dev/null | {_remote_python(source)}; else echo '[]'; fi")

    def process(self, output):
        return json.loads("".join(output) or "[]")


# a .env line, normalised: `export NAME = "value"` -> `NAME=value` (what compose reads from it)
ENV_SCRIPT = r'''
import hashlib, json, os, re, sys
LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
def parse(path):
    out = []
    if not os.path.exists(path):
        return out
    for raw in open(path, encoding="utf-8", errors="surrogateescape").read().splitlines():
        m = LINE.match(raw)
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out.append((m.group(1), m.group(1) + "=" + value))
        else:
            out.append((None, raw))
    return out
def digest(line):
    return hashlib.sha256(line.encode("utf-8", "surrogateescape")).hexdigest()
if sys.argv[1] == "digest":
    print(json.dumps([[name, digest(line)] for name, line in parse(sys.argv[2])]))
else:  # merge OLD PROVIDED OUT NAME...: header and provided values, the rest kept from OLD
    old, provided, out, names = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    kept = {}
    for name, line in parse(old):
        if name:
            kept.setdefault(name, line)
    given = parse(provided)
    lines = [given[0][1]]
    values = {name: line for name, line in given[1:] if name}
    for name in names:
        lines.append(values.get(name) or kept.get(name) or name + "=")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("\n".join(lines) + "\n")
'''


def env_line_digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


class EnvFileDigest(FactBase):
    """A .env file as [[name or None, sha256 of its normalised line]]: enough to tell whether it
    holds what we want and to keep a value the deploy was not given, without ever reading one.
    None when the file is absent."""

    def command(self, path):
        q = shlex.quote(path)
        return f"if [ -f {q} ]; then {_remote_python(ENV_SCRIPT, 'digest', path)}; fi"

    def process(self, output):
        text = "".join(output).strip()
        return json.loads(text) if text else None


class ContainerImage(FactBase):
    """The image (as configured) and running state of a container, None if there is none."""

    def command(self, container):
        q = shlex.quote(container)
        return (f"docker inspect -f '{{{{.Config.Image}}}} {{{{.State.Running}}}}' {q} 2>/dev/null || true")

    def process(self, output):
        text = "".join(output).strip()
        if not text:
            return None
        image, _, running = text.rpartition(" ")
        return {"image": image, "running": running == "true"}


@operation()
def env_secret_file(path: str, header: str, values: dict, staging_dir: str, mode: str = "600"):
    """A root-only .env of `NAME=value` lines, in the order of `values`. A value of None keeps the
    one already in the file (or writes `NAME=` if it has none); "" clears it. Compared by hashes of
    its lines, never diffed or printed."""
    names = list(values)
    current = host.get_fact(EnvFileDigest, path=path)
    existing = {}
    for name, digest in current or []:
        if name and name not in existing:
            existing[name] = digest
    desired = [env_line_digest(header)]
    for name in names:
        value = values[name]
        if value is None:
            desired.append(existing.get(name) or env_line_digest(f"{name}="))
        else:
            desired.append(env_line_digest(f"{name}={value.reveal() if isinstance(value, Secret) else value}"))
    kept = [n for n in names if values[n] is None and n in existing]
    if current is not None and [d for _, d in current] == desired:
        remote = cast(dict, host.get_fact(File, path=path))   # the digests were read from it: it exists
        if str(remote.get("mode")) != mode.lstrip("0") or remote.get("user") != "root" or remote.get("group") != "root":
            yield StringCommand("chown", "root:root", path)
            yield StringCommand("chmod", mode, path)
        else:
            host.noop(f"{path} is up to date (secret, contents not shown)")
        return
    note = f"; kept from the host: {', '.join(kept)}" if kept else ""
    host.log(f"{'Will update' if current is not None else 'Will create'} {path} (secret, contents not shown{note})")
    given = [header] + [f"{n}={v.reveal() if isinstance(v, Secret) else v}" for n, v in values.items() if v is not None]
    base = posixpath.join(staging_dir, posixpath.basename(path.rstrip("/")) + "-" + hashlib.sha256(path.encode()).hexdigest()[:8])
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", staging_dir)
    yield FileUploadCommand(io.BytesIO(("\n".join(given) + "\n").encode()), base + ".given",
                            remote_temp_filename=base + ".given.part")
    yield StringCommand("chmod", "600", base + ".given")
    yield StringCommand(_remote_python(ENV_SCRIPT, "merge", path, base + ".given", base + ".new", *names))
    yield StringCommand("rm", "-f", base + ".given")
    yield StringCommand("chown", "root:root", base + ".new")
    yield StringCommand("chmod", mode, base + ".new")
    yield StringCommand("mv", "-f", base + ".new", path)


HTPASSWD_SCRIPT = r'''
import os, sys
path, user, line_file = sys.argv[1], sys.argv[2], sys.argv[3]
new = open(line_file).read().strip("\n") + "\n"
old = open(path, newline="").read() if os.path.exists(path) else ""   # CRLF lines stay byte for byte
lines = old.splitlines(keepends=True)
for i, line in enumerate(lines):
    if line.startswith(user + ":"):
        lines[i] = new
        break
else:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(new)
tmp = path + ".whisper-platform.new"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w", newline="") as f:
    f.write("".join(lines))
if old:
    st = os.stat(path)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
else:
    import grp
    os.chown(tmp, 0, grp.getgrnam("www-data").gr_gid if "www-data" in [g.gr_name for g in grp.getgrall()] else 0)
    os.chmod(tmp, 0o640)
os.rename(tmp, path)
'''


class HtpasswdHash(FactBase):
    """The stored hash of one user's line in an htpasswd file ("" when the user has none, None
    when there is no file): the other users' lines never leave the host."""

    def command(self, path, user):
        q = shlex.quote(path)
        u = shlex.quote(user)
        return (f"if [ -f {q} ]; then echo present; "
                f"awk -v u={u} 'index($0, u \":\") == 1 {{ print substr($0, length(u) + 2); exit }}' {q}; fi")

    def process(self, output):
        if not output or output[0].strip() != "present":
            return None
        return "".join(output[1:]).strip()


@operation()
def htpasswd_user(path: str, user: str, password: Secret | None, staging_dir: str,
                  restored_line: Secret | None = None):
    """Our user's line in a shared htpasswd file: set to a bcrypt hash of `password` (kept when it
    already matches, or when no password is given and the line exists); every other line, the
    owner and the mode stay as they are. Without a password and without a line on the host,
    `restored_line` (the user's line from a backup being restored) is written."""
    import bcrypt

    stored = host.get_fact(HtpasswdHash, path=path, user=user)
    if password is None:
        if stored:
            host.noop(f"{path}: {user}'s line kept (WHISPER_BASIC_AUTH_PASSWORD not given)")
            return
        if restored_line is None:
            raise OperationError(f"WHISPER_BASIC_AUTH_PASSWORD is not set and {path} has no line for {user}: "
                                 "give the password for the first run")
        host.log(f"Will add {user}'s line in {path}, restored from the backup (secret, other lines untouched)")
        line = restored_line.reveal().rstrip("\n") + "\n"
    else:
        secret = password.reveal().encode()
        if stored:
            try:
                if bcrypt.checkpw(secret, stored.replace("$2y$", "$2b$", 1).encode()):
                    host.noop(f"{path}: {user}'s line is up to date (secret, not shown)")
                    return
            except ValueError:
                pass  # not a bcrypt hash (apr1, sha): replace it
        host.log(f"Will {'update' if stored else 'add'} {user}'s line in {path} (secret, other lines untouched)")
        line = f"{user}:{bcrypt.hashpw(secret, bcrypt.gensalt(rounds=10)).decode()}\n"
    staged = posixpath.join(staging_dir, "htpasswd-line")
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", staging_dir)
    yield FileUploadCommand(io.BytesIO(line.encode()), staged, remote_temp_filename=staged + ".part")
    yield StringCommand(_remote_python(HTPASSWD_SCRIPT, path, user, staged))
    yield StringCommand("rm", "-f", staged)


# --- many small files, one fact ---------------------------------------------------------------------
# a header line: a comment at the top of a file we write (shell, YAML, INI, systemd, nginx: '#'; Lua: '--')
HEADER_LINE = ("#", "--")
# what prints a file from its first line that is not a header line (awk adds a newline the last line lacks)
BELOW_HEADER_AWK = "awk 'b || !/^(#|--)/ {b=1; print}'"


def below_header(text: str) -> str:
    """`text` without its header (the comment lines it begins with), as BELOW_HEADER_AWK prints it: what a program
    reading the file sees of it (comments mean nothing to any of them)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    first = next((i for i, line in enumerate(lines) if not line.startswith(HEADER_LINE)), len(lines))
    return "".join(line + "\n" for line in lines[first:])


class FileStates(FactBase):
    """{path: {"mode", "user", "group", "sha256", "body"}} for those of `paths` that are regular files (`body`: the
    sha256 of the file below its header, `below_header`): one command for all of them, shared by every `text_file`
    that names the same `paths` (pyinfra caches a fact per arguments), where files.put costs two or three commands
    per file."""

    @staticmethod
    def default():
        return {}

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for f in {quoted}; do if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then "
                "printf '%s\\t%s\\t%s\\t%s\\n' \"$f\" \"$(stat -c '%a\t%U\t%G' \"$f\")\" \"$(sha256sum < \"$f\" | cut -d' ' -f1)\" "
                f"\"$({BELOW_HEADER_AWK} \"$f\" | sha256sum | cut -d' ' -f1)\"; "
                "fi; done")

    def process(self, output):
        out = {}
        for line in output:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 6:
                out[parts[0]] = {"mode": parts[1], "user": parts[2], "group": parts[3], "sha256": parts[4],
                                 "body": parts[5]}
        return out


def render_template(src: Path, filters: dict | None = None, **values) -> str:
    """A template rendered as pyinfra's files.template renders it (StrictUndefined, the trailing newline kept), for
    an operation that needs the text itself (files.put of it, and stages.signals.beyond_header); `filters`: jinja
    filters of our own the template uses."""
    from jinja2 import Environment, StrictUndefined
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(filters or {})
    return env.from_string(src.read_text()).render(**values)


def header_only(path: str, content: str, batch: tuple = ()) -> bool:
    """True when the host's file at `path` differs from `content` in its header at most (the same FileStates fact
    as `text_file(path, content, batch=batch)`: no command of its own where they share `batch`). A deploy that
    brings an earlier version's header up to date rewrites the file, and nothing that reads it needs to restart."""
    current = host.get_fact(FileStates, paths=tuple(batch) or (path,)).get(path)
    return bool(current) and current["body"] == hashlib.sha256(below_header(content).encode()).hexdigest()


@operation()
def text_file(path: str, content: str, mode: str = "644", batch: tuple = ()):
    """A root-owned text file (not a secret) with this content and mode, like files.put: its --diff is shown, and
    nothing happens when it is already so. `batch`: every path the caller writes this way, so that one FileStates
    fact answers for all of them."""
    from pyinfra import state
    from pyinfra.facts.files import FileContents
    from pyinfra.operations.util.files import generate_color_diff

    current = host.get_fact(FileStates, paths=tuple(batch) or (path,)).get(path)
    data = content.encode()
    if current and current["sha256"] == hashlib.sha256(data).hexdigest():
        if (current["mode"], current["user"], current["group"]) != (mode.lstrip("0"), "root", "root"):
            yield StringCommand("chown", "root:root", path)
            yield StringCommand("chmod", mode, path)
        else:
            host.noop(f"{path} is up to date")
        return
    host.log(f"Will {'modify' if current else 'create'} {path}")
    if state.config.DIFF and not state.is_executing:
        old = [line + "\n" for line in (host.get_fact(FileContents, path=path) or [])] if current else []
        for line in generate_color_diff(old, content.splitlines(keepends=True)):
            logger.info("  %s", line)
    yield StringCommand("mkdir", "-p", posixpath.dirname(path))
    yield FileUploadCommand(io.BytesIO(data), path + ".new", remote_temp_filename=path + ".part")
    yield StringCommand("chown", "root:root", path + ".new")
    yield StringCommand("chmod", mode, path + ".new")
    yield StringCommand("mv", "-f", path + ".new", path)


# --- a folder uploaded whole, checked with one command ------------------------------------------------------
class TreeState(FactBase):
    """{relative path: "mode sha256"} of every regular file under `path`, and {relative path: "-> target"} of every
    symlink: one command for the whole folder, where files.sync asks two or three per file. None when the folder
    is missing."""

    def command(self, path):
        q = shlex.quote(path)
        return (f"cd {q} 2>/dev/null || exit 0; echo tree; "
                "find . -type f -printf 'M\\t%m\\t%P\\n'; find . -type l -printf 'L\\t%l\\t%P\\n'; "
                "find . -type f -print0 | xargs -0r sha256sum --")

    def process(self, output):
        if not output or output[0].strip() != "tree":
            return None
        modes, links, hashes = {}, {}, {}
        for line in output[1:]:
            kind, sep, rest = line.partition("\t")
            if sep and kind in ("M", "L"):
                value, _, rel = rest.partition("\t")
                (modes if kind == "M" else links)[rel] = value
            elif "  ./" in line:
                digest_, _, rel = line.partition("  ./")
                hashes[rel] = digest_
        state = {rel: f"{modes[rel]} {hashes.get(rel, '')}" for rel in modes}
        state.update({rel: f"-> {target}" for rel, target in links.items()})
        return state


def tree_state(src: str, exclude=(), exclude_dir=(), mode: str | None = None) -> dict:
    """What files.sync(src, exclude=..., exclude_dir=..., mode=...) leaves under its dest, in TreeState's form."""
    root = Path(src)
    state = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            rel = (here / d).relative_to(root).as_posix()
            if any(fnmatch(rel, pat) for pat in exclude_dir):
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
                state[rel] = f"-> {os.readlink(here / d)}"
        for name in filenames:
            path = here / name
            if any(fnmatch(str(path), pat) for pat in exclude):
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = f"-> {os.readlink(path)}"
            else:
                file_mode = str(mode or get_path_permissions_mode(str(path))).lstrip("0") or "0"
                state[rel] = f"{file_mode} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return state


def synced_tree(name: str, src: str, dest: str, *, exclude=(), exclude_dir=(), mode: str | None = None, **kwargs):
    """files.sync(delete=True) of a local folder, asked about with one command (TreeState): when every file
    under `dest` already has its content and mode (files that `exclude` leaves alone aside), nothing is
    declared and None is returned, so a deploy with nothing to change costs one round trip here instead of
    hundreds. Otherwise the files.sync operation, whose result is the restart signal as usual."""
    from pyinfra.operations import files

    wanted = tree_state(src, exclude=exclude, exclude_dir=exclude_dir, mode=mode)
    current = host.get_fact(TreeState, path=dest)
    if current is not None:
        kept = {rel: v for rel, v in current.items()
                if not any(fnmatch(posixpath.join(dest, rel), pat) for pat in exclude)}
        if kept == wanted:
            return None
    return files.sync(name=name, src=src, dest=dest, delete=True, exclude=list(exclude) or None,
                      exclude_dir=list(exclude_dir) or None, mode=mode, **kwargs)
