"""The code gate: ruff (pyflakes, syntax errors, bugbear; [tool.ruff] in pyproject.toml) over the repository and mypy
([tool.mypy]) over stages/, the images' packages and the autostart proxy, both clean. mypy keeps its cache in
.mypy_cache (git-ignored): about 10 s cold, a few seconds warm."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: `make venv` installs the dev extra (pyproject.toml)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_is_clean():
    r = run("ruff", "check", "--no-fix", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean():
    r = run("mypy")   # what to check and how: [tool.mypy] in pyproject.toml
    assert r.returncode == 0, r.stdout + r.stderr
