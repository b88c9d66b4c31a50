"""How a process of the jobs reaches Redis and the front: the Redis connection, the link's TLS, its own name."""
from __future__ import annotations

import socket
import ssl


def redis_connection(settings, socket_timeout=None):
    """The Redis connection for STT_REDIS_URL (redis://, rediss:// or unix://) and STT_REDIS_PASSWORD.
    `socket_timeout`: for a connection that blocks (BLPOP and the like) longer than the client's default 5 s."""
    from redis import Redis

    tls = {}
    if settings.redis_url.startswith("rediss://"):
        tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.link_ca or None,
               "ssl_certfile": settings.link_cert or None, "ssl_keyfile": settings.link_key or None}
    if socket_timeout is not None:
        tls["socket_timeout"] = socket_timeout
    return Redis.from_url(settings.redis_url, password=settings.redis_password or None,
                          socket_connect_timeout=5, health_check_interval=30, **tls)


def wait_for_redis(conn, seconds: int = 60) -> None:
    """At a worker's start: Redis may still be starting (a host boot, a restart after a settings change); a clear
    exit when it does not answer within `seconds`."""
    import time

    for attempt in range(seconds):
        try:
            conn.ping()
            return
        except Exception as e:  # noqa: BLE001
            if attempt == seconds - 1:
                raise SystemExit(f"Redis at STT_REDIS_URL does not answer: {type(e).__name__}: {e}")
            time.sleep(1)


def worker_name(settings) -> str:
    """The name a job's `worker` field and the per-host metrics show: the deploy's host name."""
    return (getattr(settings, "worker_name", "") or socket.gethostname()).strip()


def link_ssl_context(settings) -> ssl.SSLContext:
    """TLS to the front over the link: its certificate checked against the link CA, ours presented."""
    ctx = ssl.create_default_context(cafile=settings.link_ca or None)
    if settings.link_cert:
        ctx.load_cert_chain(settings.link_cert, settings.link_key or None)
    return ctx
