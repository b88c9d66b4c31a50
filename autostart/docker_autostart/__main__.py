"""python3 -m docker_autostart --config /opt/docker-autostart/config.json --listen 127.0.0.1:8890"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys

from .docker import Docker
from .headers import parse_listen
from .monitoring import ContainerMonitor
from .proxy import Autostart, serve


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="docker_autostart", description=(
        "HTTP proxy that starts a service's containers (docker compose) on its first request "
        "and stops them when idle. SIGHUP reloads the config."))
    p.add_argument("--config", default="/opt/docker-autostart/config.json", help="config file (JSON)")
    p.add_argument("--listen", default="127.0.0.1:8890", help="HOST:PORT to listen on")
    p.add_argument("--compose-command", default=os.environ.get("DOCKER_AUTOSTART_COMPOSE", ""),
                   help="compose command, e.g. 'docker compose' or 'docker-compose' "
                        "(default: detect v2, then v1; env DOCKER_AUTOSTART_COMPOSE)")
    p.add_argument("--docker-command", default=os.environ.get("DOCKER_AUTOSTART_DOCKER", "docker"),
                   help="docker CLI used for `inspect` (default: docker)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between config file change checks; 0 = only SIGHUP (default 2)")
    p.add_argument("--health-interval", type=float, default=30.0,
                   help="seconds between reads of the running services' readiness path (what the proxy's /health "
                        "says of them); 0 = never")
    p.add_argument("--idle-check-interval", type=float, default=1.0,
                   help="seconds between idle checks (default 1)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to let requests in flight finish (default 30)")
    p.add_argument("--targets-file", default="",
                   help="keep this Prometheus file_sd file listing the services that run, and export their "
                        "containers' memory (default: neither)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    p.add_argument("--log-level", default=os.environ.get("DOCKER_AUTOSTART_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # journald adds its own timestamps
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format=fmt)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"docker_autostart: {exc}", file=sys.stderr)
        return 2
    compose = shlex.split(args.compose_command) if args.compose_command.strip() else None

    async def run() -> None:
        docker = Docker(docker_cmd=shlex.split(args.docker_command), compose_cmd=compose)
        autostart = Autostart(args.config, docker=docker, poll_interval=args.poll_interval,
                              idle_tick=args.idle_check_interval, health_interval=args.health_interval)
        if args.targets_file:
            autostart.plugins.append(ContainerMonitor(autostart, args.targets_file))
        await serve(autostart, host, port, access_log=args.access_log, shutdown_timeout=args.shutdown_timeout)

    try:
        asyncio.run(run())
    except OSError as exc:
        logging.getLogger("docker_autostart").error("cannot listen on %s: %s", args.listen, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
