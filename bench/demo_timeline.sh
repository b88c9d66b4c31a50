#!/usr/bin/env bash
# `make demo`, step by step with wall times: where a newcomer's first command spends its time.
# Run it from a fresh clone to measure a first run; pass a fresh wheelhouse folder to count the downloads:
#   WHISPER_WHEELHOUSE=/tmp/fresh-wheelhouse bash bench/demo_timeline.sh
# Prints one line per step and the total (make demo runs the same steps, in this order).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("make venv" "make docker" "make base-images" "make wheelhouse" "bash sandbox/up.sh" "make deploy"
       ".venv/bin/python -m sandbox.demo")
log=${DEMO_TIMELINE_LOG:-/tmp/demo-timeline.log}
: >"$log"
total=0
printf '%-36s %8s\n' "step" "seconds"
for step in "${steps[@]}"; do
  t0=$(date +%s)
  if ! bash -c "$step" >>"$log" 2>&1; then
    echo "failed: $step (log: $log)" >&2
    exit 1
  fi
  dt=$(( $(date +%s) - t0 ))
  total=$(( total + dt ))
  printf '%-36s %8d\n' "$step" "$dt"
done
printf '%-36s %8d   (load average now: %s)\n' "total" "$total" "$(cut -d' ' -f1-3 /proc/loadavg)"
