"""Our own facts and operations, where pyinfra's would print a secret or always report a change."""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File, Sha256File

from stages.secrets_env import Secret


# --- facts ----------------------------------------------------------------------------------
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


class HtpasswdEntry(FactBase):
    """One user's line of a shared htpasswd file and the sha256 of the whole file; None when the file
    is absent. Only that line leaves the host (never the other sites' lines, which RawFile would
    print with -vvv): the merge itself runs on the host (htpasswd_line). Output lines: "present",
    the file's sha256, then the user's first line if it has one."""

    def command(self, path, user):
        q = shlex.quote(path)
        return (f"if [ -f {q} ]; then echo present; sha256sum < {q} | cut -d' ' -f1; "
                f"P={shlex.quote(user + ':')} awk 'index($0, ENVIRON[\"P\"]) == 1 {{ print; exit }}' {q}; "
                "else echo absent; fi")

    def process(self, output):
        if not output or output[0].strip() != "present":
            return None
        return {"sha256": output[1].strip(), "line": output[2].rstrip("\r\n") if len(output) > 2 else None}


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


# On the host: our line (in the staged file $L) replaces the first line starting with "$P", or is
# appended; every other line byte for byte, a last line without a newline included (as
# stages.web.htpasswd_update does). Refuses when the file changed since the deploy read its sha256.
HTPASSWD_MERGE = r"""
if [ -f "$F" ]; then
  [ "$(sha256sum < "$F" | cut -d' ' -f1)" = "$SUM" ] || { echo "$F changed since the deploy read it" >&2; exit 1; }
  NOEOL=; [ -s "$F" ] && [ -n "$(tail -c1 "$F")" ] && NOEOL=1
  NOEOL=$NOEOL awk '
    NR == FNR { new = $0; next }
    { if (have) print line; line = $0; have = 1; last = 0
      if (!done && index($0, ENVIRON["P"]) == 1) { line = new; done = 1; last = 1 } }
    END { if (have) { if (ENVIRON["NOEOL"] && !last && done) printf "%s", line; else print line }
          if (!done) print new }' "$L" "$F" > "$N"
else
  cat "$L" > "$N"
fi
"""


def htpasswd_merge_command(path: str, user: str, staged_line: str, staged_new: str, expected_sha256: str | None) -> str:
    env = {"F": path, "P": user + ":", "L": staged_line, "N": staged_new, "SUM": expected_sha256 or ""}
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " sh -c " + shlex.quote(HTPASSWD_MERGE)


@operation()
def htpasswd_line(
    path: str,
    user: str,
    line: Secret,
    expected_sha256: str | None,
    staging_dir: str,
    mode: str = "640",
    owner: str = "root",
    group: str = "www-data",
):
    """Set `user`'s line of a shared htpasswd file to `line` (secret: uploaded, never printed) on the
    host itself, so the other lines never leave it. `expected_sha256` is HtpasswdEntry's sha256 of the
    file (None: the file is absent); the merge refuses a file changed since then."""
    staged = posixpath.join(staging_dir, posixpath.basename(path))
    host.log(f"Will set one line of {path} (secret, contents not shown)")
    yield StringCommand("install", "-d", "-m", "700", "-o", "root", "-g", "root", staging_dir)
    yield FileUploadCommand(io.BytesIO(line.reveal().encode()), staged + ".line",
                            remote_temp_filename=staged + ".line.part")
    yield htpasswd_merge_command(path, user, staged + ".line", staged + ".new", expected_sha256)
    yield StringCommand("chown", f"{owner}:{group}", staged + ".new")
    yield StringCommand("chmod", mode, staged + ".new")
    yield StringCommand("mv", "-f", staged + ".new", path)
    yield StringCommand("rm", "-f", staged + ".line")
