#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install Debian's docker.io and
# docker-compose (and the tools the tests use) when missing, and start dockerd by hand where no systemd runs it
# (the test bed and CI have no systemd). Idempotent; safe to call from every target.
set -euo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
for tool in debootstrap espeak-ng sox ffmpeg; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# the job tests run a real Redis (started by the tests themselves)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# the backup tool's tests encrypt with the hosts' age (tests/integration/provision/test_backup_tool.py)
command -v age >/dev/null 2>&1 || need+=(age)
# the autostart proxy's tests run it on Debian's python3 + aiohttp + prometheus_client, as the hosts do
/usr/bin/python3 -c 'import aiohttp' >/dev/null 2>&1 || need+=(python3-aiohttp)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-docker: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    echo "ensure-docker: starting dockerd (no systemd here)"
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || { echo "ensure-docker: dockerd did not come up, see /var/log/dockerd.log" >&2; exit 1; }
