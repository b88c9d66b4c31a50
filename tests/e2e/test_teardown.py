"""Runs last (file order): `make sandbox-down` leaves nothing behind."""

import subprocess

import pytest

from .conftest import REPO

pytestmark = pytest.mark.sandbox


def test_sandbox_down_leaves_nothing(deployed):
    """`make sandbox-down` removes the host, its Docker volume, keys and secrets."""
    subprocess.run(["make", "sandbox-down"], cwd=REPO, check=True, capture_output=True)
    assert subprocess.run(["docker", "ps", "-a", "-q", "-f", "name=^whisper-sandbox$"],
                          capture_output=True, text=True).stdout.strip() == ""
    volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split()
    assert "whisper-sandbox-docker" not in volumes
    assert not (REPO / ".sandbox" / "secrets.env").exists()
