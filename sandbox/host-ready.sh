#!/usr/bin/env bash
# Wait until a sandbox host container runs systemd and answers SSH with the sandbox key; prints systemd's state.
#   sandbox/host-ready.sh NAME SSH_PORT      (run from the repository root; the key is .sandbox/id_ed25519)
# Used by up.sh (the front) and worker-up.sh (worker hosts).
set -uo pipefail
NAME=${1:?usage: host-ready.sh NAME SSH_PORT}
PORT=${2:?usage: host-ready.sh NAME SSH_PORT}
state=""
for _ in $(seq 1 60); do
  state=$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
for _ in $(seq 1 30); do
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -i .sandbox/id_ed25519 -p "$PORT" root@127.0.0.1 true && break
  sleep 1
done
echo "${state:-unknown}"
