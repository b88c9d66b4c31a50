"""The basic-auth line of the shared htpasswd, deployed for real by pyinfra (@local, a file in a temp folder):
`pyinfra -vvv` never prints the other sites' lines, our line is set, the others stay byte for byte, and a second
run changes nothing. Fast: no sandbox host needed."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

REPO = Path(__file__).resolve().parents[3]
PYINFRA = Path(sys.executable).with_name("pyinfra")
OTHERS = "alice:$apr1$ALICESECRET$hash\r\nbob:$2y$05$" + "B" * 53 + "\ncarol:nofinalnewline"

DEPLOY = """
import sys
sys.path.insert(0, {repo!r})
from stages.ops import htpasswd_user
from stages.secrets_env import Secret

htpasswd_user(name="basic-auth user", path={path!r}, user="whisper", password=Secret({password!r}),
              staging_dir={staging!r})
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the operation keeps the file's owner (chown: the test bed runs as root)")
def test_htpasswd_line_deployed_without_printing_other_lines(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_bytes(OTHERS.encode())
    path.chmod(0o644)
    deploy = tmp_path / "deploy.py"

    def run(password, *flags):
        deploy.write_text(DEPLOY.format(repo=str(REPO), path=str(path), password=password,
                                        staging=str(tmp_path / "staging")))
        r = subprocess.run([str(PYINFRA), "@local", str(deploy), "-y", *flags], capture_output=True, text=True,
                           timeout=120, cwd=str(tmp_path))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout + r.stderr

    out = run("s3cret", "-vvv")
    for secret in ("ALICESECRET", "B" * 53, "nofinalnewline", "s3cret"):
        assert secret not in out
    assert base64.b64encode(OTHERS.encode()).decode()[:40] not in out   # nor the file encoded (RawFile did that)
    lines = path.read_bytes().decode().split("\n")
    assert "\n".join(lines[:3]) == OTHERS   # the others byte for byte, the last one's missing newline too
    user, _, hashed = lines[3].partition(":")
    assert user == "whisper" and bcrypt.checkpw(b"s3cret", hashed.encode()) and lines[4:] == [""]
    assert oct(path.stat().st_mode & 0o777) == "0o644"   # the host's mode of its shared file, kept

    before = path.read_bytes()
    run("s3cret")
    assert path.read_bytes() == before   # a second run with the same password changes nothing

    run("n3w", "-vvv")
    rotated = path.read_bytes().decode().split("\n")
    assert "\n".join(rotated[:3]) == OTHERS and bcrypt.checkpw(b"n3w", rotated[3].split(":", 1)[1].encode())
