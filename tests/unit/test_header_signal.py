"""A deploy that brings a file's header up to date (an earlier version's ownership marker) rewrites the file but
restarts nothing that reads it: stages.signals.beyond_header, with the host's side (stages.ops.FileStates) run by a
real shell on real files."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from stages import marker, ops, signals
from stages.ops import BELOW_HEADER_AWK, FileStates, below_header

OLD_HEADER = "# prometheus's command line. Managed by pyinfra (whisper-platform); edit group_data, not this file\n"
NEW_HEADER = f"# prometheus's command line: {marker.MARKER}; edit group_data, not this file\n"
BODY = "# (stages/monitoring.py). Every listener is on 127.0.0.1.\nARGS=\"--web.listen-address=127.0.0.1:9090\"\n"


class ShellHost:
    """pyinfra's `host` for a fact: its command run by bash here, its output processed as pyinfra does."""

    def get_fact(self, fact, **args):
        f = fact()
        out = subprocess.run(["bash", "-c", f.command(**args)], capture_output=True, text=True, check=True).stdout
        return f.process(out.splitlines())


class Op:
    """An operation as `changed()` asks it."""

    def __init__(self, changed: bool):
        self.changed = changed

    def did_change(self) -> bool:
        return self.changed


@pytest.fixture
def shell_host(monkeypatch):
    monkeypatch.setattr(ops, "host", ShellHost())


@pytest.mark.parametrize("text", [
    "", "# only a header\n", "A=1\n", "# h\n-- lua\nA=1\n# a comment further down\n\nB=2\n", "# h\nno newline at the end",
    "\n# a blank line first: no header\n", "  # indented: not a header line\nA=1\n", "-- h\nreturn 1\n",
])
def test_below_header_is_what_the_hosts_awk_prints(tmp_path, text):
    f = tmp_path / "f"
    f.write_text(text)
    out = subprocess.run(["sh", "-c", f"{BELOW_HEADER_AWK} {f}"], capture_output=True, text=True, check=True).stdout
    assert below_header(text) == out


def test_file_states_reports_the_digest_below_the_header(tmp_path):
    f = tmp_path / "prometheus"
    f.write_text(OLD_HEADER + BODY)
    state = ShellHost().get_fact(FileStates, paths=(str(f),))[str(f)]
    assert state["sha256"] == hashlib.sha256((OLD_HEADER + BODY).encode()).hexdigest()
    # the header is every comment line the file begins with (here two): what is left is what Prometheus reads
    assert below_header(OLD_HEADER + BODY) == BODY.splitlines(keepends=True)[1]
    assert state["body"] == hashlib.sha256(below_header(OLD_HEADER + BODY).encode()).hexdigest()


def test_a_new_header_alone_restarts_nothing(tmp_path, shell_host):
    f = tmp_path / "prometheus"
    f.write_text(OLD_HEADER + BODY)   # as an earlier version left it on the host
    write = Op(changed=True)          # this run rewrote it with the new header
    trigger = signals.beyond_header(write, str(f), NEW_HEADER + BODY)
    assert not signals.changed(trigger)()
    assert signals.changed(trigger, Op(changed=True))()   # another trigger still restarts it


def test_a_changed_setting_restarts_as_before(tmp_path, shell_host):
    f = tmp_path / "prometheus"
    f.write_text(OLD_HEADER + BODY)
    new = NEW_HEADER + BODY.replace("9090", "9091")
    assert signals.changed(signals.beyond_header(Op(changed=True), str(f), new))()
    # a new file (a fresh host) is a change, whatever its header
    assert signals.changed(signals.beyond_header(Op(changed=True), str(tmp_path / "absent"), new))()
    # a comment further down is part of the file, not its header: conservative, it restarts
    moved = NEW_HEADER + BODY + "# a note\n"
    assert signals.changed(signals.beyond_header(Op(changed=True), str(f), moved))()


def test_an_operation_that_changed_nothing_stays_unchanged(tmp_path, shell_host):
    f = tmp_path / "prometheus"
    f.write_text(NEW_HEADER + BODY)
    assert not signals.changed(signals.beyond_header(Op(changed=False), str(f), NEW_HEADER + BODY))()
    assert signals.beyond_header(None, str(f), "") is None   # changed() skips None, as it skips the op itself


def test_one_fact_answers_for_a_batch(tmp_path, shell_host):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(OLD_HEADER + BODY)
    b.write_text("# x\nA=1\n")
    batch = (str(a), str(b))
    assert ops.header_only(str(a), NEW_HEADER + BODY, batch)
    assert not ops.header_only(str(b), "# x\nA=2\n", batch)
