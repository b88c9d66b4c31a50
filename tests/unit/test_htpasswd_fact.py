"""The htpasswd fact and its host-side merge: only our line and the file's sha256 leave the host, and the
merge keeps every other line byte for byte, as stages.web.htpasswd_update does. The fact in pyinfra's own
style (command in, output, expected result), then both shell commands run for real with sh and awk."""

from __future__ import annotations

import hashlib
import subprocess

import bcrypt
import pytest

from stages.ops import HtpasswdEntry, htpasswd_merge_command
from stages.web import htpasswd_update

HASH = "$2b$04$" + "y" * 53
OTHERS = "alice:$apr1$abc$defghijklmnopqrstuv\nbob:$2y$05$" + "x" * 53 + "\n"


# ---------------------------------------------------------------- pyinfra style: command, output, result

def test_fact_command():
    assert HtpasswdEntry().command("/etc/nginx/.htpasswd", "whisper") == (
        "if [ -f /etc/nginx/.htpasswd ]; then echo present; sha256sum < /etc/nginx/.htpasswd | cut -d' ' -f1; "
        "P=whisper: awk 'index($0, ENVIRON[\"P\"]) == 1 { print; exit }' /etc/nginx/.htpasswd; "
        "else echo absent; fi")


@pytest.mark.parametrize("output,expected", [
    (["absent"], None),
    (["present", "e3b0c442"], {"sha256": "e3b0c442", "line": None}),
    (["present", "9f86d081", f"whisper:{HASH}"], {"sha256": "9f86d081", "line": f"whisper:{HASH}"}),
    (["present", "9f86d081", f"whisper:{HASH}\r"], {"sha256": "9f86d081", "line": f"whisper:{HASH}"}),
])
def test_fact_process(output, expected):
    assert HtpasswdEntry().process(output) == expected


# ---------------------------------------------------------------- for real: the commands in sh, on a file

def fact(path, user="whisper"):
    out = subprocess.run(["sh", "-c", HtpasswdEntry().command(str(path), user)], capture_output=True, text=True,
                         check=True).stdout
    return out, HtpasswdEntry().process(out.splitlines())


def merge(path, tmp_path, new_line: str, sha, user="whisper"):
    staged = tmp_path / "staged.line"
    staged.write_text(new_line)
    cmd = htpasswd_merge_command(str(path), user, str(staged), str(tmp_path / "staged.new"), sha)
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
    return r, tmp_path / "staged.new"


def expected(current: str, user: str, password: str, new_line: str) -> str:
    """htpasswd_update on the whole file, with its fresh salt swapped for the merge's line."""
    lines = htpasswd_update(current, user, password).splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"{user}:") and bcrypt.checkpw(
        password.encode(), ln.split(":", 1)[1].strip().encode()))
    lines[i] = new_line
    return "".join(lines)


@pytest.mark.parametrize("current", [
    OTHERS,                                                       # appended
    OTHERS.rstrip("\n"),                                          # appended after a last line without newline
    f"alice:a\nwhisper:{HASH}\nbob:b",                            # replaced in the middle, no final newline kept
    f"alice:a\r\nwhisper:{HASH}\r\nbob:b\r\n",                    # CRLF lines of others kept
    f"whisper:{HASH}\nalice:a\nwhisper:{HASH}\n",                 # only the first of two lines replaced
    f"alice:a\nwhisper:{HASH}",                                   # our line last, without newline
    "",                                                           # empty file
])
def test_merge_sets_our_line_and_keeps_every_other_byte(tmp_path, current):
    path = tmp_path / "htpasswd"
    path.write_bytes(current.encode())
    out, entry = fact(path)
    assert "alice" not in out and "bob" not in out   # other sites' lines never leave the host
    assert entry["sha256"] == hashlib.sha256(current.encode()).hexdigest()
    new_line = htpasswd_update(entry["line"], "whisper", "s3cret")
    assert new_line.startswith("whisper:") and new_line.count("\n") == 1
    r, merged = merge(path, tmp_path, new_line, entry["sha256"])
    assert r.returncode == 0, r.stderr
    assert merged.read_bytes() == expected(current, "whisper", "s3cret", new_line).encode()
    # written back, the next run finds our line matching: no change
    path.write_bytes(merged.read_bytes())
    assert htpasswd_update(fact(path)[1]["line"], "whisper", "s3cret") is None


def test_absent_file_gets_only_our_line(tmp_path):
    path = tmp_path / "htpasswd"
    out, entry = fact(path)
    assert out.strip() == "absent" and entry is None
    new_line = htpasswd_update(None, "whisper", "pw")
    r, merged = merge(path, tmp_path, new_line, None)
    assert r.returncode == 0 and merged.read_text() == new_line


def test_merge_refuses_a_file_changed_since_the_fact(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(OTHERS)
    _, entry = fact(path)
    path.write_text(OTHERS + "carol:c\n")
    r, merged = merge(path, tmp_path, "whisper:x\n", entry["sha256"])
    assert r.returncode != 0 and "changed since the deploy read it" in r.stderr and not merged.exists()


def test_user_names_are_matched_literally(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("a.b:other\na\\.b:x\n")
    out, entry = fact(path, user="a.b")
    assert entry["line"] == "a.b:other"
