"""Seed images and build both service images on the host from this repo's images/ folder.

Tags are `<name>:src-<hash of the image's sources>`: the build runs exactly when no image
of these sources exists (a source changed, or a half-failed build left none), and the
compose file names the tag, so a source change also changes the compose file.

Builds run through stages/host/build_image.py, installed on the host as
`<platform_dir>/bin/build-image`: one progress line per Dockerfile step reaches the deploy's
output, the full log stays on the host, and a build is stopped only after `build_stall_timeout`
seconds without output (never for being slow). With `build_wheelhouse` the host's wheelhouse is
served to pip on the loopback, so no wheel is downloaded again.
"""

import os
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from stages.config import EXCLUDE_DIRS, EXCLUDE_FILES, IMAGES, REPO, image_tag, services
from stages.ops import CommandSucceeds, streamed_shell

BUILD_SCRIPT = REPO / "stages" / "host" / "build_image.py"


def _context_dir(data) -> str:
    return f"{data.platform_dir}/images"


def build_command(svc: dict, tag: str, data) -> str:
    """The host command that builds one service image (run only when its tag is missing)."""
    ctx = _context_dir(data)
    cmd = [
        "python3", f"{data.platform_dir}/bin/build-image",
        "--tag", tag,
        "--file", f"{ctx}/{svc['image_dir']}/Dockerfile",
        "--build-arg", f"BASE_IMAGE={data.base_image}",
    ]
    for key, value in (svc.get("build_args") or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd += ["--label", "whisper-platform.service=" + svc["key"]]
    if data.get("build_wheelhouse"):
        cmd += ["--wheelhouse", data.build_wheelhouse, "--wheelhouse-port", str(int(data.build_wheelhouse_port))]
    cmd += [
        "--stall-timeout", str(int(data.build_stall_timeout)),
        "--log", f"{data.state_dir}/logs/build-{svc['image_name']}.log",
        ctx,
    ]
    return " ".join(shlex.quote(p) for p in cmd)


@deploy("Seed images for hosts without registry access")
def seed_images():
    data = host.data
    for tag, tarball in (data.seed_images or {}).items():
        if host.get_fact(CommandSucceeds, command=f"docker image inspect {shlex.quote(tag)}"):
            continue
        if not os.path.exists(tarball):
            raise FileNotFoundError(f"seed image {tag}: {tarball} is missing (make sandbox creates it)")
        remote = f"{data.state_dir}/seed-{tag.replace('/', '_').replace(':', '_')}.tar"
        files.put(name=f"Upload seed image {tag}", src=tarball, dest=remote)
        server.shell(name=f"Load seed image {tag}", commands=[f"docker load -i {remote}", f"rm -f {remote}"])


@deploy("Service images")
def build_images():
    data = host.data
    ctx = _context_dir(data)
    files.directory(name="Build context folder", path=ctx, mode="755")
    files.sync(
        name="Upload image sources",
        src=str(IMAGES),
        dest=ctx,
        delete=True,
        exclude=EXCLUDE_FILES,
        exclude_dir=EXCLUDE_DIRS,
    )
    if data.build_ca_bundle:
        files.put(
            name="Extra CA bundle for pip inside builds",
            src=data.build_ca_bundle,
            dest=f"{ctx}/build-ca/extra-ca.pem",
            mode="644",
        )
    else:
        files.file(name="No extra CA bundle", path=f"{ctx}/build-ca/extra-ca.pem", present=False)
    files.put(name="Image build tool", src=str(BUILD_SCRIPT), dest=f"{data.platform_dir}/bin/build-image", mode="755")
    files.directory(name="Build logs folder", path=f"{data.state_dir}/logs", mode="750")

    for svc in services(data):
        tag = image_tag(svc, data)
        if host.get_fact(CommandSucceeds, command=f"docker image inspect {shlex.quote(tag)}"):
            continue
        streamed_shell(name=f"Build image {tag}", command=build_command(svc, tag, data))
        # keep the disk from filling with every earlier build: drop older tags of this image
        server.shell(
            name=f"Remove older {svc['image_name']} images",
            commands=[
                f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {shlex.quote(svc['image_name'])}"
                f" | grep -v -x -F {shlex.quote(tag)} | xargs -r docker rmi || true"
            ],
        )
