#!/usr/bin/env bash
# Remove the sandbox host, its inner Docker volume and its state (keys, secrets, seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${SANDBOX_NAME:-whisper-sandbox}
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker volume rm -f "$NAME-docker" >/dev/null 2>&1 || true
rm -rf .sandbox/id_ed25519 .sandbox/id_ed25519.pub .sandbox/secrets.env .sandbox/known_hosts .sandbox/images \
  .sandbox/*.sandbox.test.crt .sandbox/backup-identity.txt .sandbox/backups
echo "sandbox: $NAME removed"
