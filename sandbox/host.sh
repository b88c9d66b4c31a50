#!/usr/bin/env bash
# The sandbox hosts' container mechanics, shared by up.sh (the front) and worker-up.sh (worker hosts); run from
# the repository root:
#   sandbox/host.sh run NAME IMAGE WHEELHOUSE [docker run options...]   start a systemd host container: its own
#       inner Docker volume (NAME-docker), the machine's wheelhouse read-only, the given ports/networks
#   sandbox/host.sh ready NAME SSH_PORT   wait for systemd and for SSH with .sandbox/id_ed25519; print systemd's state
set -uo pipefail
cmd=${1:?usage: host.sh run|ready ...}
NAME=${2:?usage: host.sh run|ready NAME ...}
case "$cmd" in
  run)
    IMAGE=${3:?usage: host.sh run NAME IMAGE WHEELHOUSE [options]}
    WHEELHOUSE=${4:?usage: host.sh run NAME IMAGE WHEELHOUSE [options]}
    shift 4
    exec docker run -d --name "$NAME" --hostname "$NAME" \
      --cap-add=ALL --cap-drop=SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /run --tmpfs /run/lock \
      -v "$NAME-docker:/var/lib/docker" \
      -v "$WHEELHOUSE:/var/cache/whisper-platform/wheelhouse:ro" \
      "$@" "$IMAGE"
    ;;
  ready)
    PORT=${3:?usage: host.sh ready NAME SSH_PORT}
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
    ;;
  *) echo "host.sh: unknown command $cmd" >&2; exit 2 ;;
esac
