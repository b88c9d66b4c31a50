"""The service list from group data, with per-group overrides merged and derived values."""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"

# what each image's Dockerfile copies from the build context (images/)
IMAGE_SOURCES = {
    "faster": ["build", "common", "faster"],
    "whisperx": ["build", "common", "diarize", "whisperx"],
}
# never uploaded with a build context
EXCLUDE_FILES = ["*.pyc", "*.pem", ".DS_Store"]
EXCLUDE_DIRS = ["__pycache__", "*/__pycache__", "*.egg-info", "*/.pytest_cache", ".pytest_cache"]


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def services(data) -> list[dict]:
    """Enabled services, each with its vhost, image sources and overrides applied."""
    overrides = data.get("service_overrides") or {}
    extra = data.get("service_overrides_extra") or {}
    result = []
    for entry in data.services:
        svc = _merge(_merge(entry, overrides.get(entry["key"], {})), extra.get(entry["key"], {}))
        if not svc.get("enabled", True):
            continue
        svc["vhost"] = f"{svc['subdomain']}.{data.domain}"
        svc["sources"] = IMAGE_SOURCES.get(svc["image_dir"], ["build", "common", svc["image_dir"]])
        result.append(svc)
    return result


def context_files(dirs: list[str]) -> list[Path]:
    """The files of these images/ folders that a build context holds, sorted."""
    from fnmatch import fnmatch

    files = []
    for d in dirs:
        for path in sorted((IMAGES / d).rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(IMAGES)
            parts = rel.parts[:-1]
            if any(fnmatch(p, pat.split("/")[-1]) for p in parts for pat in EXCLUDE_DIRS):
                continue
            if any(fnmatch(path.name, pat) for pat in EXCLUDE_FILES):
                continue
            files.append(path)
    return files


def image_tag(svc: dict, data) -> str:
    """`<image_name>:src-<hash>`: the hash covers the image's sources, the base image and
    the extra CA bundle, so a tag exists exactly when an image of these sources was built."""
    h = hashlib.sha256()
    for path in context_files(svc["sources"]):
        h.update(str(path.relative_to(IMAGES)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    h.update(f"base={data.base_image}\0".encode())
    for key in sorted(svc.get("build_args", {}) or {}):
        h.update(f"{key}={svc['build_args'][key]}\0".encode())
    ca = data.get("build_ca_bundle")
    if ca and os.path.exists(ca):
        h.update(Path(ca).read_bytes())
    return f"{svc['image_name']}:src-{h.hexdigest()[:12]}"
