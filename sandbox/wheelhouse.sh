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
# Idempotent: a stamp records the hash of the requirement files it was made from; files already
# there are not downloaded again when a pin changes. Prints the folder on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
wh=${WHISPER_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/whisper-platform/wheelhouse}
py=${PY:-python3}
inputs=(images/whisperx/requirements.txt images/whisperx/constraints.txt images/whisperx/torch-requirements.txt
        images/diarize/requirements.txt images/faster/requirements.txt)
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
# two images pin some packages differently
echo "wheelhouse: whisperx image (torch first: the largest downloads) -> $wh"
pipwheel() {
  # pip's warnings about this machine's unreadable extra index folders are noise here
  "$py" -m pip wheel -q --progress-bar off --wheel-dir "$wh" "$@" 2> >(grep -v 'is ignored: it is neither a file' >&2)
}
pipwheel -r images/whisperx/torch-requirements.txt -r images/whisperx/requirements.txt \
  -r images/diarize/requirements.txt -c images/whisperx/constraints.txt
echo "wheelhouse: faster image"
pipwheel -r images/faster/requirements.txt
# wheels that only the images' Python asks for: Debian bookworm's python3 (3.11.2, the images' base on the
# test bed) needs async-timeout for redis (python_full_version < 3.11.3), which this machine's Python may not
pipwheel -c images/whisperx/constraints.txt async-timeout
echo "$stamp" >"$wh/.stamp"
echo "wheelhouse: ready in $(( $(date +%s) - started )) s, $(ls "$wh"/*.whl | wc -l) wheels, $(du -sh "$wh" | cut -f1)"
echo "$wh"
