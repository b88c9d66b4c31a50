"""Which files on a host are ours: the one ownership marker, and the spellings earlier versions wrote.

Every file the deploy writes says that whisper-platform manages it, in its header. Earlier versions wrote that in
three spellings, and files on deployed hosts keep theirs until their content changes for another reason, so every
detector recognises them all:

- `MARKER`, "managed by whisper-platform" (any case): compose files, Redis's settings, systemd units, the link's
  nginx server. New files carry it.
- `LEGACY`: "Managed by pyinfra (whisper-platform)" (Prometheus, Alertmanager and blackbox configs, rules, the
  monitoring units' command lines and drop-ins, the monitor and status vhosts).
- `LEGACY_GENERIC`, "Managed by pyinfra": what the service vhosts of the first versions said. It matches any
  pyinfra-managed file, so it counts only where the path already says the file is ours (a vhost named after one of
  our services, `owned_command(path, generic=True)`); never as proof by itself.

The templates keep their header lines as they are: rewriting a header rewrites the file on every deployed host on
the next run, which restarts Redis, recreates the containers and restarts the monitoring units for nothing.
"""

from __future__ import annotations

import shlex

MARKER = "managed by whisper-platform"
LEGACY = ("managed by pyinfra (whisper-platform)",)
LEGACY_GENERIC = "managed by pyinfra"


def spellings(generic: bool = False) -> tuple[str, ...]:
    return (MARKER, *LEGACY, *((LEGACY_GENERIC,) if generic else ()))


def is_ours(text: str, generic: bool = False) -> bool:
    """The file's text carries our marker (or an earlier spelling of it)."""
    low = text.lower()
    return any(s in low for s in spellings(generic))


def grep(generic: bool = False) -> str:
    """`grep -qiE '<every spelling>'`, to end a shell pipeline or to run on files."""
    pattern = "|".join(s.replace("(", "\\(").replace(")", "\\)") for s in spellings(generic))
    return f"grep -qiE {shlex.quote(pattern)}"


def owned_command(path: str, generic: bool = False, first_line: bool = False) -> str:
    """A shell test that succeeds when the file at `path` carries our marker (or an earlier spelling); with
    `first_line`, only its first line counts (a config the host may have written that quotes us further down)."""
    source = f"head -1 {shlex.quote(path)} 2>/dev/null" if first_line else f"cat {shlex.quote(path)} 2>/dev/null"
    return f"{source} | {grep(generic)}"
