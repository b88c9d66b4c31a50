"""The proxy: route by Host, start the service's containers when they are down, stream the
request through, stop idle services. aiohttp 3.8 APIs only (Debian bookworm's python3-aiohttp)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import signal
import time
from collections import defaultdict
from typing import Dict, Optional

import aiohttp
from aiohttp import web
from yarl import URL

from . import __version__
from . import config_file as configmod
from .config_file import Config, ConfigError, ServiceConfig
from .docker import Docker, DockerError
from .headers import downstream_response_headers, routing_host, upstream_request_headers
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics

log = logging.getLogger("docker_autostart")

RECHECK_INTERVAL = 5.0  # a service seen ready within this many seconds is proxied without a docker call
READY_POLL = 0.25  # seconds between readiness probes while starting
CONTAINER_CHECK_EVERY = 8  # readiness probes between two `docker inspect` while starting
NONBLOCKING_GRACE = 1.0  # a non-blocking request waits this long for an already-running service
RETRY_AFTER = 5  # seconds, for non-blocking services while they start
CONNECT_TIMEOUT = 10.0
# aiohttp's client would add these itself; a proxy sends only what the client sent
SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent", "Content-Type")
RUNNING_STATES = ("running", "restarting")
# a readiness answer that says waiting cannot help (README, "Permanent problems"): this header, or one of these codes
PERMANENT_HEADER = "X-Health-Permanent"
PERMANENT_CODES = ("device_unavailable",)
PERMANENT_BODY_LIMIT = 64 * 1024


class StartError(Exception):
    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


class PermanentProblem(StartError):
    """The service is up and its readiness answer says it cannot become ready by waiting: requests go through
    to it, so that the client gets the service's own answer."""

    def __init__(self, message: str):
        super().__init__(503, message, "permanent")


def permanent_problem(status: int, headers, body: bytes) -> Optional[str]:
    """The service's message when a readiness answer reports a permanent problem, else None. Permanent: a non-2xx
    answer with the header `X-Health-Permanent: true` (any service can mark its answer so), or whose JSON body
    carries a code of PERMANENT_CODES, OpenAI-style (`{"error": {"code": ...}}`) or at the top level (the whisper
    images' /health: `{"status": "error", "error": "<message>", "code": "device_unavailable"}`)."""
    if 200 <= status < 300:
        return None
    marked = headers.get(PERMANENT_HEADER, "").strip().lower() in ("1", "true", "yes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    data = data if isinstance(data, dict) else {}
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else data.get("code")
    if not marked and code not in PERMANENT_CODES:
        return None
    message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    if not message:
        message = body.decode("utf-8", "replace").strip()[:500] or f"answered {status}"
    return f"{message} ({code})" if isinstance(code, str) and code else message


class _UpstreamUnreachable(Exception):
    """Connection refused before any request byte was read from the client: safe to retry."""


class ServiceState:
    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.in_flight = 0
        self.last_active = time.monotonic()
        self.ready = False  # seen running and answering its readiness path, containers not restarted since
        self.verified_at = 0.0  # when `ready` was last confirmed (docker inspect)
        self.started_sig: tuple = ()  # the containers' StartedAt when last seen ready
        self.stopped: Optional[bool] = None  # True once we stopped it or saw it stopped
        self.start_task: Optional[asyncio.Future] = None
        self.last_error: Optional[str] = None
        self.permanent: Optional[str] = None  # the permanent problem its readiness answer last reported
        self.phase = "idle"  # what a start is doing, for the 504 message

    @property
    def starting(self) -> bool:
        return self.start_task is not None and not self.start_task.done()

    def describe(self) -> str:
        if self.starting:
            return "starting"
        if self.ready:
            return "running"
        if self.stopped:
            return "stopped"
        if self.permanent:
            return "error"
        return "unknown"

    def invalidate(self) -> None:
        self.ready = False
        self.verified_at = 0.0


def json_error(status: int, message: str, err_type: str, host: Optional[str] = None,
               headers: Optional[dict] = None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "code": status}}
    if host:
        body["error"]["host"] = host
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


class Autostart:
    def __init__(self, config_path: str, *, docker: Optional[Docker] = None, poll_interval: float = 2.0,
                 idle_tick: float = 1.0):
        self.config_path = config_path
        self.docker = docker or Docker()
        self.poll_interval = poll_interval
        self.idle_tick = idle_tick
        self.config = Config()
        self.config_error: Optional[str] = None
        self.states: Dict[str, ServiceState] = {}
        self.metrics = Metrics(lambda: sorted(self.states.items()))
        self._locks: Dict[str, asyncio.Lock] = {}
        self._signature = None
        self._tasks = []
        self._stopping = set()
        self.session: Optional[aiohttp.ClientSession] = None
        self.started_at = time.time()

    # ---------------------------------------------------------------- config
    def reload(self, why: str) -> bool:
        self._signature = configmod.file_signature(self.config_path)
        try:
            cfg = configmod.load(self.config_path)
        except ConfigError as exc:
            self.config_error = str(exc)
            self.metrics.reloads.labels(result="error").inc()
            log.error("config rejected (%s): %s: %s; keeping the previous config (%d services)",
                      why, self.config_path, exc, len(self.states))
            return False
        self.config_error = None
        self.apply(cfg)
        self.metrics.reloads.labels(result="ok").inc()
        log.info("config loaded (%s): %s: %d services: %s", why, self.config_path, len(cfg.services),
                 ", ".join(sorted(cfg.services)) or "-")
        return True

    def apply(self, cfg: Config) -> None:
        for host in list(self.states):
            if host not in cfg.services:
                log.info("service removed host=%s (its containers are left as they are)", host)
                del self.states[host]
        for host, svc in cfg.services.items():
            st = self.states.get(host)
            if st is None:
                self.states[host] = ServiceState(svc)
            elif st.cfg != svc:
                st.cfg = svc
                st.invalidate()
                log.info("service changed host=%s", host)
        self.config = cfg

    async def _poll_config(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            sig = configmod.file_signature(self.config_path)
            if sig == self._signature:
                continue
            if sig is None:
                self._signature = None
                log.warning("config file %s disappeared; keeping the current config", self.config_path)
                continue
            self.reload("file changed")

    # ---------------------------------------------------------------- lifecycle
    def _lock(self, compose_dir: str) -> asyncio.Lock:
        lock = self._locks.get(compose_dir)
        if lock is None:
            lock = self._locks[compose_dir] = asyncio.Lock()
        return lock

    async def ensure_ready(self, st: ServiceState, wait: float) -> bool:
        """True when the service is up and ready; False when still starting after `wait`
        seconds; StartError when the start failed. Many callers share one start."""
        if st.ready and time.monotonic() - st.verified_at < RECHECK_INTERVAL:
            return True
        task = st.start_task
        if task is None or task.done():
            task = st.start_task = asyncio.ensure_future(self._start(st))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved here
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except asyncio.TimeoutError:
            return False
        return True

    async def _start(self, st: ServiceState) -> None:
        cfg = st.cfg
        t0 = time.monotonic()
        deadline = t0 + cfg.max_wait
        started = False
        st.phase = "waiting for another start or stop in the same composeDir"
        async with self._lock(cfg.compose_dir):
            st.phase = "checking containers"
            try:
                found = await self.docker.inspect(cfg.containers)
            except DockerError as exc:
                raise self._fail(st, 502, f"cannot check containers: {exc}", "docker") from None
            down = {c: s for c, (s, _) in found.items() if s not in RUNNING_STATES}
            sig = tuple(found[c][1] for c in cfg.containers)
            if not down and st.ready and sig == st.started_sig:
                # still the same running containers we saw ready: no readiness probe, which a
                # busy service might answer slowly
                st.verified_at = time.monotonic()
                return
            if down:
                st.invalidate()
                st.stopped = False
                self.metrics.starts.labels(host=cfg.host).inc()
                log.info("starting host=%s (%s): %s; compose up -d in %s", cfg.host, cfg.name,
                         ", ".join(f"{c} {s}" for c, s in down.items()), cfg.compose_dir)
                st.phase = "compose up -d still running"
                t_up = time.monotonic()
                try:
                    await self.docker.up(cfg.compose_dir)
                except DockerError as exc:
                    raise self._fail(st, 502, str(exc), "compose") from None
                self.metrics.compose_up_duration.labels(host=cfg.host).observe(time.monotonic() - t_up)
                started = True
        st.ready = False
        await self._wait_ready(st, deadline)
        if started:
            try:
                found = await self.docker.inspect(cfg.containers)
                sig = tuple(found[c][1] for c in cfg.containers)
            except DockerError:
                sig = ()
        elapsed = time.monotonic() - t0
        if started:
            self.metrics.start_duration.labels(host=cfg.host).observe(elapsed)
            log.info("ready host=%s after %.1fs", cfg.host, elapsed)
        st.ready, st.verified_at, st.stopped, st.last_error, st.permanent = True, time.monotonic(), False, None, None
        st.started_sig = sig

    def _fail(self, st: ServiceState, status: int, message: str, reason: str) -> StartError:
        st.invalidate()
        st.last_error = message
        self.metrics.start_failures.labels(host=st.cfg.host, reason=reason).inc()
        log.error("start failed host=%s reason=%s: %s", st.cfg.host, reason, message)
        return StartError(status, message, reason)

    def _permanent(self, st: ServiceState, message: str) -> PermanentProblem:
        st.invalidate()
        st.last_error = message
        if st.permanent != message:   # said (and counted) once, not on every request that re-checks it
            st.permanent = message
            self.metrics.start_failures.labels(host=st.cfg.host, reason="permanent").inc()
            log.error("host=%s reports a permanent problem, requests go through to its own answer: %s",
                      st.cfg.host, message)
        return PermanentProblem(message)

    async def _wait_ready(self, st: ServiceState, deadline: float) -> None:
        cfg = st.cfg
        path = cfg.readiness_path or "/"
        url = f"http://127.0.0.1:{cfg.proxy_port}{path}"
        last = "no answer yet"
        probes = 0
        while True:
            try:
                timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, deadline - time.monotonic())))
                async with self.session.get(url, timeout=timeout, allow_redirects=False) as resp:
                    body = await _read_some(resp.content, PERMANENT_BODY_LIMIT)
                    if 200 <= resp.status < 300 or (cfg.readiness_path is None and resp.status < 500):
                        return
                    problem = permanent_problem(resp.status, resp.headers, body)
                    if problem:
                        raise self._permanent(st, f"{path} answered {resp.status}: {problem}")
                    last = f"{path} answered {resp.status}"
                st.phase = f"waiting for readiness, last: {last}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"{path}: {type(exc).__name__}: {exc}".rstrip(": ")
                st.phase = f"waiting for readiness, last: {last}"
            if time.monotonic() >= deadline:
                raise self._fail(st, 504, f"{cfg.host} not ready within maxWait={cfg.max_wait:g}s ({last})",
                                 "timeout")
            probes += 1
            if probes % CONTAINER_CHECK_EVERY == 0:
                try:
                    states = await self.docker.running(cfg.containers)
                except DockerError as exc:
                    raise self._fail(st, 502, f"cannot check containers: {exc}", "docker") from None
                dead = {c: s for c, s in states.items() if s not in RUNNING_STATES and s != "created"}
                if dead:
                    raise self._fail(st, 502, "container stopped while starting: " +
                                     ", ".join(f"{c} {s}" for c, s in dead.items()), "exited")
            await asyncio.sleep(max(0.0, min(READY_POLL, deadline - time.monotonic())))

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.idle_tick)
            try:
                self.idle_pass()
            except Exception:  # never let the stopper die
                log.exception("idle check failed")

    def idle_pass(self) -> None:
        groups = defaultdict(list)
        for st in self.states.values():
            groups[st.cfg.compose_dir].append(st)
        for compose_dir, sts in groups.items():
            if compose_dir in self._stopping or not self._idle(sts) or all(s.stopped for s in sts):
                continue
            self._stopping.add(compose_dir)
            task = asyncio.ensure_future(self._stop_group(compose_dir, sts))
            task.add_done_callback(lambda t, d=compose_dir: self._stopping.discard(d))

    @staticmethod
    def _idle(sts) -> bool:
        now = time.monotonic()
        return all(s.cfg.idle_timeout > 0 and not s.in_flight and not s.starting
                   and now - s.last_active >= s.cfg.idle_timeout for s in sts)

    async def _stop_group(self, compose_dir: str, sts) -> None:
        async with self._lock(compose_dir):
            if not self._idle(sts):
                return
            for s in sts:
                s.invalidate()
            containers = sorted({c for s in sts for c in s.cfg.containers})
            try:
                states = await self.docker.running(containers)
            except DockerError as exc:
                log.error("idle check failed for %s: %s", compose_dir, exc)
                for s in sts:
                    s.last_active = time.monotonic()  # try again after another idle period
                return
            if not any(v in RUNNING_STATES for v in states.values()):
                for s in sts:
                    s.stopped = True
                return
            if not self._idle(sts):  # a request came in while docker answered
                return
            busy = await self._jobs_pending(sts)
            if busy:
                # asynchronous jobs queued or running (the service's /health says so): its workers live in
                # this compose project, stopping it would hold them until the next request
                for s in sts:
                    s.last_active = time.monotonic()
                log.info("kept host=%s running: %s", ", ".join(s.cfg.host for s in sts), busy)
                return
            hosts = ", ".join(s.cfg.host for s in sts)
            idle_for = time.monotonic() - max(s.last_active for s in sts)
            t0 = time.monotonic()
            try:
                await self.docker.stop(compose_dir)
            except DockerError as exc:
                log.error("stop failed host=%s: %s", hosts, exc)
                for s in sts:
                    self.metrics.stop_failures.labels(host=s.cfg.host).inc()
                    s.last_active = time.monotonic()
                return
            for s in sts:
                s.stopped = True
                self.metrics.stops.labels(host=s.cfg.host).inc()
            log.info("stopped host=%s after %.0fs idle (compose stop in %s, %.1fs)", hosts, idle_for, compose_dir,
                     time.monotonic() - t0)

    async def _jobs_pending(self, sts) -> str:
        """'N jobs queued, M running' when a service's readiness answer reports asynchronous jobs in
        progress ({"jobs": {"queued": N, "running": M}}, as the whisper images' /health does); '' otherwise,
        also when the service does not answer or reports no jobs."""
        for st in sts:
            cfg = st.cfg
            try:
                async with self.session.get(f"http://127.0.0.1:{cfg.proxy_port}{cfg.readiness_path}",
                                            timeout=aiohttp.ClientTimeout(total=5), allow_redirects=False) as resp:
                    body = await resp.json(content_type=None) if resp.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                continue
            jobs = body.get("jobs") if isinstance(body, dict) else None
            if isinstance(jobs, dict):
                queued, running = jobs.get("queued") or 0, jobs.get("running") or 0
                if isinstance(queued, int) and isinstance(running, int) and queued + running > 0:
                    return f"{queued} jobs queued, {running} running"
        return ""

    # ---------------------------------------------------------------- HTTP
    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = routing_host(request.headers.get("Host"))
        st = self.states.get(host) if host else None
        if st is None:
            return self.own(request, host)
        if st.cfg.wake_path and request.path == st.cfg.wake_path and request.method in ("GET", "HEAD", "POST"):
            resp = self.wake(st)
            self.metrics.requests.labels(host=st.cfg.host, code=resp.status).inc()
            return resp
        st.in_flight += 1
        st.last_active = time.monotonic()
        try:
            resp = await self._serve(request, st)
        finally:
            st.in_flight -= 1
            st.last_active = time.monotonic()
        self.metrics.requests.labels(host=st.cfg.host, code=resp.status).inc()
        return resp

    async def _serve(self, request: web.Request, st: ServiceState) -> web.StreamResponse:
        body_touched = [False]
        for attempt in (1, 2):
            cfg = st.cfg
            try:
                # the start itself gives up after maxWait with the reason; the slack lets it say so
                wait = cfg.max_wait + 2 if cfg.blocking else min(NONBLOCKING_GRACE, cfg.max_wait)
                if not await self.ensure_ready(st, wait):
                    if cfg.blocking:
                        return json_error(504, f"{cfg.host} not ready within maxWait={cfg.max_wait:g}s "
                                          f"({st.phase})", "start_timeout", cfg.host)
                    return json_error(503, f"{cfg.host} is starting, retry in a few seconds", "starting",
                                      cfg.host, headers={"Retry-After": str(RETRY_AFTER)})
            except PermanentProblem:
                pass  # up, and it cannot get better by waiting: the client gets the service's own answer
            except StartError as exc:
                return json_error(exc.status, exc.message,
                                  "start_timeout" if exc.status == 504 else "start_failed", cfg.host)
            try:
                return await self._forward(request, st, body_touched)
            except _UpstreamUnreachable as exc:
                st.invalidate()
                if attempt == 2 or body_touched[0]:
                    self.metrics.upstream_errors.labels(host=cfg.host, kind="connect").inc()
                    return json_error(502, f"{cfg.host} unreachable: {exc}", "upstream_unreachable", cfg.host)
                log.warning("host=%s refused the connection; checking its containers", cfg.host)
        raise AssertionError("unreachable")

    async def _forward(self, request: web.Request, st: ServiceState, body_touched) -> web.StreamResponse:
        cfg = st.cfg
        path = request.raw_path if request.raw_path.startswith("/") else request.rel_url.path_qs
        url = URL(f"http://127.0.0.1:{cfg.proxy_port}{path}", encoded=True)
        headers = upstream_request_headers(request.headers, remote=request.remote, scheme=request.scheme)
        data = _body(request.content, body_touched) if request.body_exists else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=cfg.upstream_timeout)
        try:
            async with self.session.request(request.method, url, headers=headers, data=data,
                                            allow_redirects=False, skip_auto_headers=SKIP_AUTO_HEADERS,
                                            timeout=timeout) as up:
                out_headers = downstream_response_headers(up.headers)
                if request.method == "HEAD" or up.status in (204, 304) or up.status < 200:
                    return web.Response(status=up.status, reason=up.reason, headers=out_headers)
                resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out_headers)
                await resp.prepare(request)
                try:
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        return resp  # the client went away; leaving the block closes upstream
                    kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "broken"
                    self.metrics.upstream_errors.labels(host=cfg.host, kind=kind).inc()
                    log.warning("host=%s upstream %s mid-response on %s %s: %s", cfg.host, kind,
                                request.method, request.path, type(exc).__name__)
                    transport.close()  # a truncated body must not look complete to the client
                    return resp
                await resp.write_eof()
                return resp
        except aiohttp.ClientConnectorError as exc:
            raise _UpstreamUnreachable(str(exc)) from None
        except asyncio.TimeoutError:
            self.metrics.upstream_errors.labels(host=cfg.host, kind="timeout").inc()
            return json_error(504, f"{cfg.host} did not answer within {cfg.upstream_timeout:g}s",
                              "upstream_timeout", cfg.host)
        except aiohttp.ClientError as exc:
            self.metrics.upstream_errors.labels(host=cfg.host, kind="broken").inc()
            st.invalidate()
            return json_error(502, f"{cfg.host} upstream error: {type(exc).__name__}: {exc}".rstrip(": "),
                              "upstream_error", cfg.host)

    def wake(self, st: ServiceState) -> web.Response:
        """The service's wake path (config "wakePath"): a page that will call the service asks for it when it
        loads, so the start runs while its user picks a file. Answered at once, never forwarded: 200 when the
        service is ready, 202 while it starts (this request started it, or joined the start under way). The start
        counts as activity: the idle timer starts again from it."""
        st.last_active = time.monotonic()
        body = {"service": st.cfg.name, "host": st.cfg.host}
        if st.ready and time.monotonic() - st.verified_at < RECHECK_INTERVAL:
            return web.json_response({**body, "status": "ready"})
        if not st.starting:
            st.start_task = asyncio.ensure_future(self._start(st))
            st.start_task.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported by _start
        return web.json_response({**body, "status": "starting"}, status=202)

    def own(self, request: web.Request, host: Optional[str]) -> web.Response:
        """The proxy's own endpoints, for Hosts that are not a configured service."""
        if request.path == "/health" and request.method in ("GET", "HEAD"):
            body = {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1),
                "config": self.config_path,
                "config_error": self.config_error,
                "services": {h: {"name": s.cfg.name, "state": s.describe(), "in_flight": s.in_flight,
                                 "blocking": s.cfg.blocking, "last_error": s.last_error}
                             for h, s in sorted(self.states.items())},
            }
            return web.json_response(body)
        if request.path == "/metrics" and request.method in ("GET", "HEAD"):
            return web.Response(body=self.metrics.render().encode(),
                                headers={"Content-Type": METRICS_CONTENT_TYPE})
        return json_error(404, f"no service is configured for host {host!r}" if host else
                          "no Host header and no such endpoint", "unknown_host", host)

    # ---------------------------------------------------------------- app
    async def _on_startup(self, app) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )
        self._tasks = [asyncio.ensure_future(self._idle_loop())]
        if self.poll_interval > 0:
            self._tasks.append(asyncio.ensure_future(self._poll_config()))
        self._tasks.append(asyncio.ensure_future(self._detect_compose()))

    async def _detect_compose(self) -> None:
        try:
            await self.docker.compose_cmd()
        except Exception as exc:  # reported again on each start
            log.error("%s", exc)

    async def _on_cleanup(self, app) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.session is not None:
            await self.session.close()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app


async def _read_some(content, limit: int) -> bytes:
    """A response body up to `limit` bytes (the rest is left unread: the connection is not reused)."""
    chunks, size = [], 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _body(content, touched):
    """The client's request body, chunk by chunk as it arrives (flow-controlled both ways)."""
    while True:
        touched[0] = True
        chunk = await content.readany()
        if not chunk:
            return
        yield chunk


async def serve(autostart: Autostart, host: str, port: int, *, access_log: bool = False,
                shutdown_timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: autostart.reload("SIGHUP"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    autostart.reload("startup")
    app = autostart.make_app()
    runner_kwargs = {"handle_signals": False}
    if not access_log:
        runner_kwargs["access_log"] = None
    site_kwargs = {}
    if "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters:  # aiohttp >= 3.9
        runner_kwargs["shutdown_timeout"] = shutdown_timeout
    else:  # aiohttp 3.8
        site_kwargs["shutdown_timeout"] = shutdown_timeout
    runner = web.AppRunner(app, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, host, port, **site_kwargs)
    await site.start()
    log.info("docker-autostart %s listening on http://%s:%d (aiohttp %s)", __version__,
             f"[{host}]" if ":" in host else host, port, aiohttp.__version__)
    try:
        await done.wait()
    finally:
        log.info("shutting down (waiting up to %.0fs for requests in flight; containers are left running)",
                 shutdown_timeout)
        await runner.cleanup()
