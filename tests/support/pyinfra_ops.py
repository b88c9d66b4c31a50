"""pyinfra operations run in the unit tier, in pyinfra's own style: facts in, commands out (no host)."""
from __future__ import annotations

from pyinfra.api import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host


class StandInHost:
    """Answers get_fact from a table {(FactClass, frozenset(kwargs)): value}; collects noop/log lines."""

    name = "stand-in"

    def __init__(self, facts: dict):
        self.facts = facts
        self.noops: list[str] = []
        self.logs: list[str] = []

    def get_fact(self, cls, *args, **kwargs):
        return self.facts.get((cls, frozenset(kwargs.items())))

    def noop(self, text):
        self.noops.append(text)

    def log(self, text, *args, **kwargs):
        self.logs.append(text)


def fact(cls, value, **kwargs):
    return (cls, frozenset(kwargs.items())), value


def run_op(op, facts: dict, **kwargs):
    """The commands an operation yields against these facts, as text (uploads as `upload DEST`), and the host."""
    host = StandInHost(dict(facts))
    with ctx_host.use(host):
        commands = list(op._inner(**kwargs))
    text = []
    for cmd in commands:
        if isinstance(cmd, FileUploadCommand):
            text.append(f"upload {cmd.dest}")
        else:
            assert isinstance(cmd, StringCommand)
            text.append(cmd.get_raw_value())
    return text, commands, host


def uploaded(commands) -> bytes:
    ups = [c for c in commands if isinstance(c, FileUploadCommand)]
    return b"".join(c.src.getvalue() for c in ups)
