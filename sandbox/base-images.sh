#!/usr/bin/env bash
# Local base images, made without any registry (none is reachable on the test bed):
#   local/debian:bookworm      debootstrap minbase, imported
#   local/python:3.11-slim     stand-in for python:3.11-slim (bookworm's python3 is 3.11)
# Usage: base-images.sh [DOCKER_CMD...]   (default: docker; the sandbox passes
#        "docker exec -i whisper-sandbox docker" to import them into its inner engine)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
docker_cmd=("$@")
[ ${#docker_cmd[@]} -gt 0 ] || docker_cmd=(docker)
bash "$here/debian-image.sh" bookworm "${docker_cmd[@]}"
if ! "${docker_cmd[@]}" image inspect local/python:3.11-slim >/dev/null 2>&1; then
  # same shape as python:3.11-slim for our Dockerfiles: python3 with venv, CA certificates
  printf '%s\n' 'FROM local/debian:bookworm' \
    'RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3 /usr/local/bin/python' \
    | "${docker_cmd[@]}" build -q -t local/python:3.11-slim - >/dev/null
fi
echo "base-images: local/debian:bookworm and local/python:3.11-slim ready"
