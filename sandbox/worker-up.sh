#!/usr/bin/env bash
# Start a sandbox worker host beside the sandbox front host, on a private Docker network of both:
#   bash sandbox/worker-up.sh NAME SSH_PORT     e.g. bash sandbox/worker-up.sh wsb-workers-w1 2233
# The host is a fresh systemd+sshd Debian like the front (same image, key and wheelhouse); only its SSH port is
# published (127.0.0.1). The front joins the network "${SANDBOX_NAME}-link"; its address there is written to
# .sandbox/link-address, which inventory.py gives the front as its link_address. Deploy to both with
#   SANDBOX_WORKERS=NAME:SSH_PORT pyinfra inventory.py deploy.py -y
# Idempotent; sandbox/worker-down.sh NAME removes the host.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: worker-up.sh NAME SSH_PORT}
PORT=${2:?usage: worker-up.sh NAME SSH_PORT}
FRONT=${SANDBOX_NAME:-whisper-sandbox}
NET=${SANDBOX_LINK_NETWORK:-$FRONT-link}
IMAGE=${SANDBOX_IMAGE:-whisper-sandbox-host:latest}
STATE=.sandbox
[ -n "$(docker ps -q -f name="^${FRONT}$")" ] || { echo "worker-up: the front $FRONT is not running (sandbox/up.sh)" >&2; exit 1; }
[ -f "$STATE/id_ed25519.pub" ] || { echo "worker-up: no $STATE/id_ed25519.pub (sandbox/up.sh makes it)" >&2; exit 1; }

# a subnet apart from the inner Docker networks of the hosts (172.17-31/16): one per front, by its SSH port
SUBNET=${SANDBOX_LINK_SUBNET:-10.213.$(( ${SANDBOX_SSH_PORT:-2222} % 250 )).0/24}
docker network inspect "$NET" >/dev/null 2>&1 || docker network create --internal --subnet "$SUBNET" "$NET" >/dev/null
docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NET" | grep -qw -- "$FRONT" \
  || { docker network disconnect -f "$NET" "$FRONT" >/dev/null 2>&1 || true; docker network connect "$NET" "$FRONT"; }
wheelhouse=$(bash sandbox/wheelhouse.sh 2>/dev/null | tail -n 1)

if [ -z "$(docker ps -q -f name="^${NAME}$")" ]; then
  if [ -n "$(docker ps -aq -f name="^${NAME}$")" ]; then
    docker start "$NAME" >/dev/null   # a stopped (killed) worker host comes back as it was
  else
    echo "worker-up: starting $NAME"
    bash sandbox/host.sh run "$NAME" "$IMAGE" "$wheelhouse" -p "127.0.0.1:$PORT:22" >/dev/null
    # a private network for the link, plus the default bridge for the SSH port (an --internal network publishes none)
    docker network connect "$NET" "$NAME"
  fi
fi
docker exec -i "$NAME" sh -c 'mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys' \
  <"$STATE/id_ed25519.pub"
state=$(bash sandbox/host.sh ready "$NAME" "$PORT")
docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$FRONT" > "$STATE/link-address"
# known_hosts is shared by the sandbox hosts: forget this one's old key (a re-created host has a new one)
[ -f "$STATE/known_hosts" ] && ssh-keygen -q -R "[127.0.0.1]:$PORT" -f "$STATE/known_hosts" >/dev/null 2>&1 || true
echo "worker-up: $NAME is up (systemd: ${state:-unknown}); link address of $FRONT: $(cat "$STATE/link-address")"
