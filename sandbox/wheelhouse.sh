#!/usr/bin/env bash
# One local wheelhouse per machine: every wheel both service images install (torch and its CUDA
# libraries included, about 4 GB), downloaded once and built once where PyPI has only a source
# distribution (webrtcvad). It feeds .venv-ml (make venv-ml), the image builds on the test bed and
# every sandbox host, which mounts it read-only; the deploy serves it to `docker build` on the host's
# loopback (group_data: build_wheelhouse).
#
#   WHISPER_WHEELHOUSE   where it lives (default ~/.cache/whisper-platform/wheelhouse: outside the
#                        checkout, so a fresh clone on the same machine finds it, and make clean keeps it)
#
# Idempotent: a stamp records the hash of the lock files it was made from (make lock writes them); files
# already there are not downloaded again when a version changes. Prints the folder on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
wh=${WHISPER_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/whisper-platform/wheelhouse}
py=${PY:-python3}
# the lock files hold every version both images install; nothing else decides what the wheelhouse holds
inputs=(images/whisperx/requirements.lock images/faster/requirements.lock images/faster/requirements-cuda.lock)
stamp=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
if [ -f "$wh/.stamp" ] && [ "$(cat "$wh/.stamp")" = "$stamp" ]; then
  echo "wheelhouse: up to date ($(du -sh "$wh" | cut -f1))"
  echo "$wh"
  exit 0
fi
mkdir -p "$wh"
rm -f "$wh/.stamp"
started=$(date +%s)
# `pip wheel` saves the wheels it finds and builds the ones it does not (webrtcvad) with this
# machine's compiler, for this Python (3.11, the images' Python too); one run per image, since the
# two images lock some packages differently. Each lock is complete (async-timeout included, which
# Debian bookworm's python3 3.11.2, the images' base on the test bed, needs for redis), so the
# wheelhouse serves every image build whatever the Python that made it.
echo "wheelhouse: whisperx image (torch and its CUDA libraries: the largest downloads) -> $wh"
pipwheel() {
  # the wheels already here first, offline (a lock change that only drops or reorders versions
  # downloads nothing); the configured index only for what is missing
  "$py" -m pip wheel -q --progress-bar off --no-index --find-links "$wh" --wheel-dir "$wh" "$@" >/dev/null 2>&1 && return
  # pip's warnings about this machine's unreadable extra index folders are noise here
  "$py" -m pip wheel -q --progress-bar off --find-links "$wh" --wheel-dir "$wh" "$@" \
    2> >(grep -v 'is ignored: it is neither a file' >&2)
}
pipwheel -r images/whisperx/requirements.lock
echo "wheelhouse: faster image"
pipwheel -r images/faster/requirements.lock
# the faster image's GPU variant (build arg DEVICE=cuda): cuBLAS and cuDNN at the versions the whisperx image's
# torch brings, so nothing more is downloaded
pipwheel -r images/faster/requirements-cuda.lock
echo "$stamp" >"$wh/.stamp"
echo "wheelhouse: ready in $(( $(date +%s) - started )) s, $(ls "$wh"/*.whl | wc -l) wheels, $(du -sh "$wh" | cut -f1)"
echo "$wh"
