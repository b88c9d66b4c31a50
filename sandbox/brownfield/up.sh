#!/usr/bin/env bash
# `make sandbox-brownfield`: srv759970's twin. The sandbox host mechanics of sandbox/up.sh (same SSH,
# HTTP and HTTPS ports, key and wheelhouse mount) on Debian 13 with Docker and Compose v2, seeded once
# with the runbook's hand-made state (seed.sh, rootfs/). One of the two sandboxes at a time.
#   DEPLOY_TARGET=brownfield pyinfra inventory.py deploy.py   # then take it over
# Writes .sandbox/brownfield-secrets.env (our deploy's throwaway secrets, no HF_TOKEN: the host's
# token must survive) and .sandbox/brownfield-tenant.env (the other tenant's basic-auth password).
set -euo pipefail
cd "$(dirname "$0")/../.."
export SANDBOX_NAME=${SANDBOX_NAME:-whisper-brownfield}
STATE=.sandbox
mkdir -p "$STATE"
chmod 700 "$STATE"
other=whisper-sandbox
[ "$SANDBOX_NAME" = "$other" ] && other=whisper-brownfield
if [ -n "$(docker ps -q -f name="^${other}$")" ] \
   && docker port "$other" 22 2>/dev/null | grep -q ":${SANDBOX_SSH_PORT:-2222}\$"; then
  echo "sandbox-brownfield: $other is running on the same ports; make sandbox-down first (one sandbox at a time)" >&2
  exit 1
fi

# the Debian 13 base image, made like bookworm's
bash sandbox/debian-image.sh trixie

(umask 077
 if [ ! -f "$STATE/brownfield-secrets.env" ]; then
   python3 - >"$STATE/brownfield-secrets.env" <<'PY'
import secrets
print("# throwaway secrets for the brownfield sandbox; no HF_TOKEN: the host's token is kept")
print("WHISPER_BASIC_AUTH_USER=whisper")
print("WHISPER_BASIC_AUTH_PASSWORD=" + secrets.token_urlsafe(18))
print("WHISPER_API_KEY=sk-brownfield-" + secrets.token_urlsafe(24))
PY
 fi
 [ -f "$STATE/brownfield-tenant.env" ] || python3 -c 'import secrets; print("TENANT_USER=admin"); print("TENANT_PASSWORD=" + secrets.token_urlsafe(12))' >"$STATE/brownfield-tenant.env")

fresh=no
[ -z "$(docker ps -a -q -f name="^${SANDBOX_NAME}$")" ] && fresh=yes
tag=$(cat sandbox/brownfield/Dockerfile | sha256sum | cut -c1-12)
SANDBOX_IMAGE=whisper-brownfield-host:$tag SANDBOX_BUILD_DIR=sandbox/brownfield bash sandbox/up.sh

if [ "$fresh" = yes ] || ! docker exec "$SANDBOX_NAME" test -f /root/.brownfield-seeded; then
  echo "sandbox-brownfield: seeding the hand-made state"
  docker exec "$SANDBOX_NAME" rm -rf /root/brownfield-seed
  docker cp sandbox/brownfield "$SANDBOX_NAME:/root/brownfield-seed"
  docker cp "$STATE/images/python-3.11-slim.tar" "$SANDBOX_NAME:/root/brownfield-seed/python-3.11-slim.tar"
  # shellcheck disable=SC1091
  . "$STATE/brownfield-tenant.env"
  docker exec -e SEED=/root/brownfield-seed -e TENANT_PASSWORD="$TENANT_PASSWORD" "$SANDBOX_NAME" \
    bash /root/brownfield-seed/seed.sh
  docker exec "$SANDBOX_NAME" sh -c 'rm -rf /root/brownfield-seed && touch /root/.brownfield-seeded'
fi
echo "sandbox-brownfield: $SANDBOX_NAME is srv759970's hand-made twin; DEPLOY_TARGET=brownfield pyinfra inventory.py deploy.py"
