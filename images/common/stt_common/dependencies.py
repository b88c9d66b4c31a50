"""What the services depend on besides themselves (Redis for the jobs, the disk holding the jobs' files), in one
place: how their failure is answered. A request that meets a failed dependency gets a documented answer in
OpenAI's error shape, never a 500:

| dependency | status | code | Retry-After | when |
| --- | --- | --- | --- | --- |
| redis | 503 | `jobs_unavailable` | 5 s | Redis does not answer, is loading its AOF, or refuses writes (`OOM`: `maxmemory` reached, `MISCONF`: its disk is full, ...) |
| disk | 507 | `insufficient_storage` | 60 s | a write to the jobs' disk ran out of space (`ENOSPC`, `EDQUOT`) |

No route catches these failures itself: they propagate to the app's error handlers (`install_handlers`, from
`errors.install_error_handlers`), which ask `failure()` what an exception means. Whatever the failing request had
written is removed by its own cleanup on the way out (the upload's temp file, the job's folder).

(The day-two work extends this module with the dependencies' probes for /health and /metrics; the names here are
the ones it keeps.)
"""
from __future__ import annotations

import errno
import logging
from typing import Optional

from .errors import APIError

log = logging.getLogger("stt_common.dependencies")

REDIS = "redis"
DISK = "disk"
REDIS_RETRY_AFTER = 5     # s: a Redis restart takes about a second; memory comes back as jobs end and expire
DISK_RETRY_AFTER = 60     # s: space comes back when an operator or the jobs' retention frees some
# Redis's error replies that say "not now" (its state), not "this command is wrong" (a bug: a 500 stays a 500)
_REDIS_NOT_NOW = ("MISCONF", "OOM", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "BUSY", "TRYAGAIN",
                  "CLUSTERDOWN", "NOAUTH", "WRONGPASS", "NOPERM")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def jobs_unavailable() -> APIError:
    return APIError(503, "Asynchronous jobs are unavailable for a moment: the job store (Redis) does not answer "
                         "or is full. Jobs already accepted are kept; retry in a few seconds.",
                    type="server_error", code="jobs_unavailable", headers={"Retry-After": str(REDIS_RETRY_AFTER)})


def insufficient_storage() -> APIError:
    return APIError(507, "The server's storage for jobs is full: no new job can be accepted now. "
                         "Jobs already accepted are kept; retry later.",
                    type="server_error", code="insufficient_storage", headers={"Retry-After": str(DISK_RETRY_AFTER)})


def is_redis_failure(exc: BaseException) -> bool:
    try:
        from redis import exceptions as rx
    except ImportError:   # a service without the jobs' packages
        return False
    if isinstance(exc, (rx.ConnectionError, rx.TimeoutError)):   # BusyLoadingError and AuthenticationError too
        return True
    # redis-py turns some replies into classes of their own and drops their prefix ("OOM command not allowed..."
    # arrives as OutOfMemoryError("command not allowed..."))
    for name in ("OutOfMemoryError", "ReadOnlyError", "NoPermissionError"):
        cls = getattr(rx, name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        if text.startswith("Command # "):   # a pipeline's error: "Command # 1 (SET a b) of pipeline caused error: ..."
            text = text.split("caused error: ", 1)[-1]
        return text.split(" ", 1)[0].upper() in _REDIS_NOT_NOW
    return False


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def failure(exc: BaseException) -> Optional[tuple[str, APIError]]:
    """(dependency, the answer) when `exc` is a dependency's failure; None for anything else (a bug: a 500)."""
    if is_redis_failure(exc):
        return REDIS, jobs_unavailable()
    if is_disk_full(exc):
        return DISK, insufficient_storage()
    return None


def install_handlers(app) -> None:
    """The app's error handlers for the dependencies' exceptions (errors.install_error_handlers calls this)."""
    from .errors import unexpected_error

    async def handle(request, exc):
        hit = failure(exc)
        if hit is None:
            return await unexpected_error(request, exc)
        name, answer = hit
        log.warning("%s unavailable (%s %s answered %s): %s", name, request.method, request.url.path, answer.code,
                    type(exc).__name__)
        return answer.response()

    app.add_exception_handler(OSError, handle)
    try:
        from redis import exceptions as rx
    except ImportError:
        return
    app.add_exception_handler(rx.RedisError, handle)
