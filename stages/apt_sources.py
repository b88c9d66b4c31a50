"""A third-party apt repository named in group_data (NVIDIA's container toolkit, Grafana): its source line, signed
by a key file the operator fetched and checked (apt refuses its packages without it). This project names no
package host itself: the repository's address is a group_data knob, empty by default."""

from __future__ import annotations

import io
import os

from pyinfra.operations import apt, files

from stages.signals import changed


def source_line(repo: str, keyring: str) -> str:
    """The apt line for a repository as its install guide names it: a flat repository's URL (" /" is added), or
    the URL followed by its suite and components."""
    repo = repo.strip()
    if not repo.split()[1:]:
        repo += " /"
    return f"deb [signed-by={keyring}] {repo}\n"


def key_file_problem(repo_knob: str, key_knob: str, key: str) -> str | None:
    """Why the key knob cannot sign the repository (None when it can)."""
    if key and os.path.isfile(key):
        return None
    return (f"{repo_knob} is set but {key_knob} ({key or 'empty'}) names no local file: give the repository's "
            f"signing key (apt checks the packages against it)")


def signed_source(label: str, repo: str, key: str, keyring: str, source: str) -> list:
    """The key, the source line and an `apt update` when either changed; returns the operations."""
    ops = [files.put(name=f"{label}: repository signing key", src=key, dest=keyring, mode="644"),
           files.put(name=f"{label}: apt source", src=io.StringIO(source_line(repo, keyring)), dest=source,
                     mode="644")]
    ops.append(apt.update(name=f"apt: read the {label} source", _if=changed(*ops)))
    return ops
