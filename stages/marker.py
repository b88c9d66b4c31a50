"""Which files on a host are ours: the one ownership marker, and the spellings earlier versions wrote.

Every file the deploy writes says that whisper-platform manages it, in its header, spelled as `MARKER` ("managed by
whisper-platform", exactly so: `grep -rl 'managed by whisper-platform' /etc /opt` finds them all;
tests/unit/test_marker.py holds every template and rendered header to it). Earlier versions wrote two other
spellings, and a host deployed by one keeps them until the next deploy rewrites the header, so every detector
recognises them all:

- `LEGACY`: "Managed by pyinfra (whisper-platform)" (Prometheus, Alertmanager and blackbox configs, rules, the
  monitoring units' command lines and drop-ins, the monitor and status vhosts).
- `LEGACY_GENERIC`, "Managed by pyinfra": what the service vhosts and nginx snippets of the first versions said. It
  matches any pyinfra-managed file, so it counts only where the path already says the file is ours (a vhost named
  after one of our services, `owned_command(path, generic=True)`); never as proof by itself.

Rewriting an old header rewrites the file on every deployed host on the next deploy; a change confined to a file's
header restarts nothing that reads it (stages.signals.beyond_header), and nginx only reloads. Files whose header
already carried `MARKER` (the compose files, Redis's settings, the link's nginx server) keep their header lines as
they are: a new one would recreate the containers or restart Redis for a comment.
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
