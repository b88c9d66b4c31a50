"""What the services depend on besides themselves (Redis for the jobs, the disk holding the jobs' files), in one
place: how their failure is answered, and how /health and /metrics say so.

A request that meets a failed dependency gets a documented answer in OpenAI's error shape, never a 500:

| dependency | status | code | Retry-After | when |
| --- | --- | --- | --- | --- |
| redis | 503 | `jobs_unavailable` | 5 s | Redis does not answer (restarting, stopped, its socket gone), is loading its AOF, or refuses writes (`MISCONF`: its disk is full, `OOM`: `maxmemory` reached, ...) |
| disk | 507 | `insufficient_storage` | 60 s | the disk holding the jobs' files has less than `STT_JOBS_MIN_FREE_MB` free (checked before an upload is read), or a write ran out of space (`ENOSPC`, `EDQUOT`) |

No route catches these failures itself: they propagate to the app's error handlers (`install_handlers`, from
`errors.install_error_handlers`), which ask `failure()` what an exception means. Whatever the failing request
had written is removed by its own cleanup on the way out (the upload's temp file, the job's folder), so nothing
half-written stays behind. Jobs already accepted are never touched: they wait in Redis (AOF) and on disk.

`Dependencies` (one per app, `AppRuntime.dependencies`) holds a probe per dependency; `/health` and every `/metrics`
scrape run them (a Redis PING without retries, a statvfs), so they tell the state now, never a stale one:
- `/health` stays 200 while the service itself is ready, with `"status": "degraded"`, `"degraded": [names]` and
  `"dependencies": {name: {"status": ..., "code": ..., "error": ..., "since": ...}}` (images/common/README.md);
- `/metrics`: `stt_dependency_up{dependency}` (1/0), `stt_jobs_disk_free_bytes`, and
  `stt_dependency_failures_total{dependency,code}`, the requests answered 503/507 because of one.
"""
from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from typing import Callable, Dict, Optional

from .errors import APIError

log = logging.getLogger("stt_common.dependencies")

REDIS = "redis"
DISK = "disk"
REDIS_RETRY_AFTER = 5     # s: a Redis restart or upgrade takes about a second, loading a large AOF a few more
DISK_RETRY_AFTER = 60     # s: space comes back when an operator or the jobs' retention frees some
LOG_EVERY = 10.0          # s between two log lines about the same failing dependency (bounded logs in an outage)
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


def describe_error(exc: BaseException) -> str:
    """A short cause for /health and the logs: the exception's type and its first line, no host secrets (redis-py
    messages name the socket path or address and the errno, never the password)."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_free_space(path: str, incoming_bytes: int, min_free_bytes: int) -> None:
    """507 insufficient_storage before anything is written when the disk holding `path` would keep less than
    `min_free_bytes` free after `incoming_bytes` more."""
    if min_free_bytes <= 0 and incoming_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return   # the write itself will tell
    if free - max(0, incoming_bytes) < min_free_bytes:
        raise insufficient_storage()


def disk_probe(path: str, min_free_bytes: int) -> Callable[[], dict]:
    """The disk dependency's probe: `full` below `min_free_bytes` free (where new jobs get 507)."""
    def probe() -> dict:
        usage = shutil.disk_usage(path)
        state = {"status": "ok" if usage.free >= max(1, min_free_bytes) else "full",
                 "free_bytes": usage.free, "min_free_bytes": min_free_bytes}
        if state["status"] != "ok":
            state["code"] = "insufficient_storage"
        return state
    return probe


class Dependencies:
    """The service's dependencies: a probe per name (`add`), run by /health and /metrics; failures counted as the
    error handlers answer them (`answered`)."""

    def __init__(self, metrics=None):
        self.metrics = metrics
        self._probes: Dict[str, Callable[[], dict]] = {}
        self._since: Dict[str, str] = {}
        self._logged: Dict[str, float] = {}
        self._lock = threading.Lock()
        if metrics is not None:
            metrics.registry.register(_Collector(self))

    def add(self, name: str, probe: Callable[[], dict]) -> None:
        """`probe()` returns {"status": "ok", ...} or {"status": <what is wrong>, "code": ..., ...}; raising counts
        as unavailable (the exception's type and first line are shown)."""
        self._probes[name] = probe

    @property
    def names(self) -> list:
        return sorted(self._probes)

    def check(self) -> Dict[str, dict]:
        """Every dependency's state now, with `since` (when it was first seen failing) for a failing one."""
        out = {}
        for name in self.names:
            try:
                state = dict(self._probes[name]())
            except Exception as exc:  # noqa: BLE001 - a probe's failure is the answer
                state = {"status": "unavailable", "error": describe_error(exc)}
                hit = failure(exc)
                if hit:
                    state["code"] = hit[1].code
            with self._lock:
                if state.get("status") == "ok":
                    self._since.pop(name, None)
                else:
                    state["since"] = self._since.setdefault(name, _iso_now())
            out[name] = state
        return out

    def answered(self, name: str, code: str, exc: BaseException, where: str) -> None:
        """A request was answered 503/507 because of `name`: counted, and logged at most every LOG_EVERY s."""
        if self.metrics is not None:
            self.metrics.dependency_failures.labels(name, code).inc()
        now = time.monotonic()
        with self._lock:
            self._since.setdefault(name, _iso_now())
            if now - self._logged.get(name, -LOG_EVERY) < LOG_EVERY:
                return
            self._logged[name] = now
        log.warning("%s unavailable (%s answered %s): %s", name, where, code, describe_error(exc))


class _Collector:
    """stt_dependency_up and stt_jobs_disk_free_bytes, probed at scrape time."""

    def __init__(self, deps: Dependencies):
        self.deps = deps

    def describe(self):
        return []   # nothing at registration time: the probes may need what is not up yet

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        states = self.deps.check()
        if not states:
            return
        up = GaugeMetricFamily("stt_dependency_up", "1 when the dependency answers and has room, 0 when requests "
                                                    "needing it get 503/507 (see /health's dependencies)",
                               labels=["dependency"])
        for name, state in states.items():
            up.add_metric([name], 1.0 if state.get("status") == "ok" else 0.0)
        yield up
        disk = states.get(DISK)
        if disk and "free_bytes" in disk:
            yield GaugeMetricFamily("stt_jobs_disk_free_bytes", "Free bytes on the disk holding the jobs' files",
                                    value=disk["free_bytes"])


def install_handlers(app) -> None:
    """The app's error handlers for the dependencies' exceptions (errors.install_error_handlers calls this)."""
    from .errors import unexpected_error

    async def handle(request, exc):
        hit = failure(exc)
        if hit is None:
            return await unexpected_error(request, exc)
        name, answer = hit
        svc = getattr(request.app.state, "service", None)
        deps = getattr(svc, "dependencies", None)
        if deps is not None:
            deps.answered(name, answer.code, exc, f"{request.method} {request.url.path}")
        return answer.response()

    app.add_exception_handler(OSError, handle)
    try:
        from redis import exceptions as rx
    except ImportError:
        return
    app.add_exception_handler(rx.RedisError, handle)


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
