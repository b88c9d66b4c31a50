#!/usr/bin/env bash
# A local Debian base image without any registry: debootstrap minbase once (the rootfs tar is kept in
# the sandbox cache), then imported as local/debian:<suite>. Used for bookworm (sandbox/base-images.sh,
# the fresh host's images) and trixie (sandbox/brownfield/up.sh, srv759970's twin).
# Usage: debian-image.sh SUITE [DOCKER_CMD...]   (default: docker)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=$1; shift
cache=${SANDBOX_CACHE:-$here/../.sandbox}
docker_cmd=("$@")
[ ${#docker_cmd[@]} -gt 0 ] || docker_cmd=(docker)
"${docker_cmd[@]}" image inspect "local/debian:$suite" >/dev/null 2>&1 && exit 0
rootfs_tar=$cache/$suite-rootfs.tar
mkdir -p "$cache"
if [ ! -s "$rootfs_tar" ]; then
  echo "debian-image: debootstrap $suite (minbase)"
  tmp=$(mktemp -d)
  # no mirror named: debootstrap's default, or the one this machine's configuration gives
  debootstrap --variant=minbase "$suite" "$tmp/rootfs" >"$cache/debootstrap-$suite.log" 2>&1 \
    || { tail -20 "$cache/debootstrap-$suite.log" >&2; rm -rf "$tmp"; exit 1; }
  tar -C "$tmp/rootfs" -c . >"$rootfs_tar.part"
  mv "$rootfs_tar.part" "$rootfs_tar"
  rm -rf "$tmp"
fi
"${docker_cmd[@]}" import - "local/debian:$suite" <"$rootfs_tar" >/dev/null
