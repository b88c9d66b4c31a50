#!/usr/bin/env bash
# Remove sandbox worker hosts and their inner Docker volumes; with --all also the link network (the front leaves it).
#   bash sandbox/worker-down.sh NAME...      bash sandbox/worker-down.sh --all NAME...
set -euo pipefail
cd "$(dirname "$0")/.."
FRONT=${SANDBOX_NAME:-whisper-sandbox}
NET=${SANDBOX_LINK_NETWORK:-$FRONT-link}
all=0
for arg in "$@"; do
  if [ "$arg" = --all ]; then all=1; continue; fi
  docker rm -f "$arg" >/dev/null 2>&1 || true
  docker volume rm -f "$arg-docker" >/dev/null 2>&1 || true
  echo "worker-down: $arg removed"
done
if [ "$all" = 1 ]; then
  docker network disconnect -f "$NET" "$FRONT" >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf .sandbox/link .sandbox/link-address
fi
