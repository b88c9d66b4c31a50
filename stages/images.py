"""Stage "images": seed images, then build each service's image on the host from this repo's images/.

Tags are `<name>:src-<hash of the image's sources>`: the build runs exactly when no image
of these sources exists (a source changed, or a half-failed build left none), and the
compose file names the tag, so a source change also changes the compose file.

Builds run through stages/host/build_image.py, installed on the host as
`<platform_dir>/bin/build-image`: one progress line per Dockerfile step reaches the deploy's
output, the full log stays on the host, and a build is stopped only after `build_stall_timeout`
seconds without output (never for being slow). With `build_wheelhouse` the host's wheelhouse is
served to pip on the loopback, so no wheel is downloaded again.
"""

import hashlib
import os
import shlex
from fnmatch import fnmatch
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.ops import CommandSucceeds, streamed_shell, synced_tree
from stages.settings import IMAGES, REPO, Platform, ServiceEntry

BUILD_SCRIPT = REPO / "stages" / "host" / "build_image.py"
# never uploaded with a build context
EXCLUDE_FILES = ["*.pyc", "*.pem", ".DS_Store"]
EXCLUDE_DIRS = ["__pycache__", "*/__pycache__", "*.egg-info", "*/.pytest_cache", ".pytest_cache"]


def context_files(dirs) -> list[Path]:
    """The files of these images/ folders that a build context holds, sorted."""
    files_ = []
    for d in dirs:
        for path in sorted((IMAGES / d).rglob("*")):
            if not path.is_file():
                continue
            parts = path.relative_to(IMAGES).parts[:-1]
            if any(fnmatch(p, pat.split("/")[-1]) for p in parts for pat in EXCLUDE_DIRS):
                continue
            if any(fnmatch(path.name, pat) for pat in EXCLUDE_FILES):
                continue
            files_.append(path)
    return files_


def image_tag(svc: ServiceEntry, p: Platform) -> str:
    """`<image_name>:src-<hash>`: the hash covers the image's sources, the base image, its build
    args and the extra CA bundle, so a tag exists exactly when an image of these sources was built."""
    h = hashlib.sha256()
    for path in context_files(svc.sources):
        h.update(str(path.relative_to(IMAGES)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    h.update(f"base={p.base_image}\0".encode())
    for key in sorted(svc.build_args):
        h.update(f"{key}={svc.build_args[key]}\0".encode())
    if p.build_ca_bundle and os.path.exists(p.build_ca_bundle):
        h.update(Path(p.build_ca_bundle).read_bytes())
    return f"{svc.image_name}:src-{h.hexdigest()[:12]}"


def _context_dir(p: Platform) -> str:
    return f"{p.platform_dir}/images"


def build_command(svc: ServiceEntry, tag: str, p: Platform) -> str:
    """The host command that builds one service image (run only when its tag is missing)."""
    ctx = _context_dir(p)
    cmd = [
        "python3", f"{p.platform_dir}/bin/build-image",
        "--tag", tag,
        "--file", f"{ctx}/{svc.image_dir}/Dockerfile",
        "--build-arg", f"BASE_IMAGE={p.base_image}",
    ]
    for key, value in svc.build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd += ["--label", "whisper-platform.service=" + svc.key]
    if p.build_wheelhouse:
        cmd += ["--wheelhouse", p.build_wheelhouse, "--wheelhouse-port", str(p.build_wheelhouse_port)]
    cmd += [
        "--stall-timeout", str(p.build_stall_timeout),
        "--log", f"{p.state_dir}/logs/build-{svc.image_name}.log",
        ctx,
    ]
    return " ".join(shlex.quote(part) for part in cmd)


@deploy("Seed images for hosts without registry access")
def seed_images(p: Platform):
    for tag, tarball in p.seed_images.items():
        if host.get_fact(CommandSucceeds, command=f"docker image inspect {shlex.quote(tag)}"):
            continue
        if not os.path.exists(tarball):
            raise FileNotFoundError(f"seed image {tag}: {tarball} is missing (make sandbox creates it)")
        remote = f"{p.state_dir}/seed-{tag.replace('/', '_').replace(':', '_')}.tar"
        files.put(name=f"Upload seed image {tag}", src=tarball, dest=remote)
        server.shell(name=f"Load seed image {tag}", commands=[f"docker load -i {remote}", f"rm -f {remote}"])


@deploy("Service images")
def build_images(p: Platform):
    ctx = _context_dir(p)
    files.directory(name="Build context folder", path=ctx, mode="755")
    synced_tree("Upload image sources", str(IMAGES), ctx, exclude=EXCLUDE_FILES, exclude_dir=EXCLUDE_DIRS)
    if p.build_ca_bundle:
        files.put(
            name="Extra CA bundle for pip inside builds",
            src=p.build_ca_bundle,
            dest=f"{ctx}/build-ca/extra-ca.pem",
            mode="644",
        )
    else:
        files.file(name="No extra CA bundle", path=f"{ctx}/build-ca/extra-ca.pem", present=False)
    files.put(name="Image build tool", src=str(BUILD_SCRIPT), dest=f"{p.platform_dir}/bin/build-image", mode="755")
    files.directory(name="Build logs folder", path=f"{p.state_dir}/logs", mode="750")

    for svc in p.services:
        tag = image_tag(svc, p)
        if host.get_fact(CommandSucceeds, command=f"docker image inspect {shlex.quote(tag)}"):
            continue
        streamed_shell(name=f"Build image {tag}", command=build_command(svc, tag, p))
        # keep the disk from filling with every earlier build: drop older tags of this image
        server.shell(
            name=f"Remove older {svc.image_name} images",
            commands=[
                f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {shlex.quote(svc.image_name)}"
                f" | grep -v -x -F {shlex.quote(tag)} | xargs -r docker rmi || true"
            ],
        )
