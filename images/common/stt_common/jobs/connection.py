"""How a process of the jobs reaches Redis and the front: the Redis connection, the link's TLS, its own name."""
from __future__ import annotations

import socket
import ssl
from typing import Any


# How a client rides out a Redis that does not answer for a moment (restarted, upgraded, loading its AOF): a command
# that meets a closed connection or a refused one is retried with a jittered exponential back-off, on a new
# connection.
#   api     about a second at most (the routes run on the event loop), then 503 jobs_unavailable with Retry-After
#           (stt_common.dependencies); a Redis that accepts but does not answer costs one 5 s timeout, not retried;
#   worker  about 25 s, then RQ's own loop (and, past it, Docker's restart policy) takes over; no socket timeout
#           (RQ's dequeue blocks on Redis by design);
#   probe   /health's and /metrics' PING: no retry, 2 s at most, so that they tell the state at once.
ROLES: dict[str, dict[str, Any]] = {
    "api": {"retries": (3, 0.1, 1.0), "socket_connect_timeout": 2, "socket_timeout": 5},
    "worker": {"retries": (10, 0.25, 4.0), "socket_connect_timeout": 5},
    "probe": {"retries": (0, 0.0, 0.0), "socket_connect_timeout": 2, "socket_timeout": 2},
}


def redis_connection(settings, role: str = "api", socket_timeout=None):
    """The Redis connection for STT_REDIS_URL (redis://, rediss:// or unix://) and STT_REDIS_PASSWORD, with the
    retries and timeouts of its role (ROLES). `socket_timeout`: for a connection that blocks (BLPOP and the like)
    longer than its role's timeout."""
    from redis import Redis
    from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    options = dict(ROLES[role])
    tries, base, cap = options.pop("retries")
    retry_on = (ConnectionError, TimeoutError) if role == "worker" else (ConnectionError,)
    retry = Retry(ExponentialWithJitterBackoff(base=base, cap=cap) if tries else NoBackoff(), tries, retry_on)
    tls = {}
    if settings.redis_url.startswith("rediss://"):
        tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.link_ca or None,
               "ssl_certfile": settings.link_cert or None, "ssl_keyfile": settings.link_key or None}
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
    return Redis.from_url(settings.redis_url, password=settings.redis_password or None,
                          health_check_interval=30, retry=retry, **options, **tls)


def wait_for_redis(conn, log_every: float = 30.0) -> None:
    """Until Redis answers (a host boot, Redis restarting or upgraded): a back-off up to 10 s between tries, a log
    line every `log_every` s; never gives up (the container would only be restarted into the same wait)."""
    import logging
    import time

    from ..dependencies import describe_error, is_redis_failure

    delay, said = 0.5, 0.0
    while True:
        try:
            conn.ping()
            return
        except Exception as e:  # noqa: BLE001
            if not is_redis_failure(e):
                raise
            if time.monotonic() - said >= log_every:
                said = time.monotonic()
                logging.getLogger("stt_common.jobs").warning(
                    "Redis at STT_REDIS_URL does not answer (%s): waiting", describe_error(e))
        time.sleep(delay)
        delay = min(10.0, delay * 2)


def worker_name(settings) -> str:
    """The name a job's `worker` field and the per-host metrics show: the deploy's host name."""
    return (getattr(settings, "worker_name", "") or socket.gethostname()).strip()


def link_ssl_context(settings) -> ssl.SSLContext:
    """TLS to the front over the link: its certificate checked against the link CA, ours presented."""
    ctx = ssl.create_default_context(cafile=settings.link_ca or None)
    if settings.link_cert:
        ctx.load_cert_chain(settings.link_cert, settings.link_key or None)
    return ctx
