"""The lock files (make lock) agree with what they lock: a requirement changed without `make lock` fails
here, offline, before any install or image build does."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# what the locks are resolved for (the Makefile's UV_COMPILE): the images' Python on Linux x86-64
ENV = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}

# lock file -> the requirement files (or pyproject extras) it locks
LOCKS = {
    "requirements.lock": ["pyproject.toml[dev]"],
    "images/faster/requirements.lock": ["images/faster/requirements.txt"],
    "images/faster/requirements-cuda.lock": ["images/faster/requirements.txt", "images/faster/requirements-cuda.txt"],
    "images/whisperx/requirements.lock": ["images/whisperx/torch-requirements.txt",
                                          "images/whisperx/requirements.txt", "images/diarize/requirements.txt"],
    "images/whisperx/torch-requirements.lock": ["images/whisperx/torch-requirements.txt"],
    "requirements-ml.lock": ["requirements-ml.txt"],
}


def locked(lock: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / lock).read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"{lock}: {line!r} is not an exact pin"
            pins[canonicalize_name(Requirement(name).name)] = version.split(";")[0].rstrip("\\ ").strip()
    return pins


def requirements(source: str) -> list[Requirement]:
    if source == "pyproject.toml[dev]":
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    out = []
    for line in (REPO / source).read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            out += requirements(line[3:].strip())
        else:
            out.append(Requirement(line))
    return out


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_requirement_is_locked_at_a_version_it_allows(lock):
    pins = locked(lock)
    stale = []
    for source in LOCKS[lock]:
        for req in requirements(source):
            if req.marker and not req.marker.evaluate(ENV):
                continue
            version = pins.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                stale.append(f"{req} ({source}): locked {version}")
    assert not stale, f"{lock} is out of date, run `make lock`: " + "; ".join(stale)


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_locks_name_no_index_and_no_local_path(lock):
    text = (REPO / lock).read_text()
    assert not re.search(r"^\s*(-i|-f|--index-url|--extra-index-url|--find-links)\b", text, re.M)
    assert not re.search(r"(file:|https?://|/opt/|/root/|/home/)", text)


@pytest.mark.parametrize("lock", ["images/whisperx/torch-requirements.lock", "requirements-ml.lock"])
def test_locks_built_on_the_whisperx_image_keep_its_versions(lock):
    image = locked("images/whisperx/requirements.lock")
    differ = {name: (version, image[name]) for name, version in locked(lock).items()
              if name in image and image[name] != version}
    assert not differ
    if lock == "requirements-ml.lock":
        assert set(image) <= set(locked(lock)), "the ML environment lacks packages of the image"


def test_faster_gpu_lock_adds_only_the_cuda_libraries_at_torchs_versions():
    """The GPU variant of the faster image differs from the CPU one by cuBLAS and cuDNN alone, at the versions the
    whisperx image's torch brings (one copy of each in the wheelhouse)."""
    cpu, cuda = locked("images/faster/requirements.lock"), locked("images/faster/requirements-cuda.lock")
    added = {name: version for name, version in cuda.items() if name not in cpu}
    assert {name: v for name, v in cpu.items() if cuda.get(name) != v} == {}
    assert set(added) == {"nvidia-cublas-cu12", "nvidia-cudnn-cu12"}
    torch = locked("images/whisperx/requirements.lock")
    assert all(torch[name] == version for name, version in added.items())


@pytest.mark.parametrize("lock", ["requirements.lock", "images/faster/requirements.lock",
                                  "images/faster/requirements-cuda.lock"])
def test_hashed_locks_give_every_version_its_hashes(lock):
    """pip checks hashes for all or nothing: one pin without its hash fails the whole install."""
    text = (REPO / lock).read_text()
    pins = re.findall(r"^[A-Za-z0-9][^\n]*==[^\n]*$", text, re.M)
    assert pins and all(p.endswith("\\") for p in pins), [p for p in pins if not p.endswith("\\")][:5]
    assert len(re.findall(r"^[A-Za-z0-9][^\n]*==[^\n]*\\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.M)) == len(pins)
