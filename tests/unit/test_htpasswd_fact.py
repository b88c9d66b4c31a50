"""The htpasswd fact (stages.ops.HtpasswdHash) in pyinfra's own style: command in, output, expected result;
then the command and the host-side merge (HTPASSWD_SCRIPT) run for real on files: only our hash leaves the
host, and every other line stays byte for byte."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stages.ops import HTPASSWD_SCRIPT, HtpasswdHash

HASH = "$2b$04$" + "y" * 53


def test_fact_command():
    assert HtpasswdHash().command("/etc/nginx/.htpasswd", "whisper") == (
        "if [ -f /etc/nginx/.htpasswd ]; then echo present; "
        "awk -v u=whisper 'index($0, u \":\") == 1 { print substr($0, length(u) + 2); exit }' /etc/nginx/.htpasswd; fi")


@pytest.mark.parametrize("output,expected", [
    ([], None),                               # no file
    (["present"], ""),                        # a file without our user
    (["present", HASH], HASH),
    (["present", HASH + "\r"], HASH),
])
def test_fact_process(output, expected):
    assert HtpasswdHash().process(output) == expected


@pytest.mark.parametrize("current", [
    "alice:$apr1$abc$def\nbob:$2y$05$" + "x" * 53 + "\n",     # appended
    "alice:a\nbob:b",                                          # appended after a last line without newline
    f"alice:a\nwhisper:{HASH}\nbob:b",                         # replaced in the middle, the others' bytes kept
    f"alice:a\r\nwhisper:{HASH}\r\nbob:b\r\n",                 # CRLF lines of others kept
    f"whisper:{HASH}\nalice:a\nwhisper:{HASH}\n",              # only the first of two lines replaced
    "",                                                        # empty file
])
def test_fact_and_merge_on_real_files(tmp_path, current):
    path = tmp_path / "htpasswd"
    path.write_bytes(current.encode())
    out = subprocess.run(["sh", "-c", HtpasswdHash().command(str(path), "whisper")], capture_output=True,
                         text=True, check=True).stdout
    assert "alice" not in out and "bob" not in out   # the other sites' lines never leave the host
    line = tmp_path / "line"
    line.write_text("whisper:NEWHASH\n")
    subprocess.run([sys.executable, "-c", HTPASSWD_SCRIPT, str(path), "whisper", str(line)], check=True)
    new = path.read_bytes().decode()
    others = [ln for ln in current.splitlines(keepends=True) if not ln.startswith("whisper:")]
    kept = [ln for ln in new.splitlines(keepends=True) if not ln.startswith("whisper:")]
    if current and not current.endswith("\n") and "whisper:" not in current:
        others[-1] += "\n"   # a newline is added before our appended line, nothing else changes
    assert kept == others[:len(kept)] and "whisper:NEWHASH\n" in new
    assert new.count("whisper:NEWHASH") == 1
