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
