#!/usr/bin/env bash
# Remove the brownfield sandbox host, its inner Docker volume and its throwaway secrets.
# (The SSH key and the seed image tarball in .sandbox/ are shared with the fresh sandbox.)
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${SANDBOX_NAME:-whisper-brownfield}
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker volume rm -f "$NAME-docker" >/dev/null 2>&1 || true
rm -f .sandbox/brownfield-secrets.env .sandbox/brownfield-tenant.env .sandbox/known_hosts
echo "sandbox-brownfield: $NAME removed"
