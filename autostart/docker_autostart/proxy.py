"""The proxy: route by Host, start the service's containers when they are down, stream the
request through, stop idle services. aiohttp 3.8 APIs only (Debian bookworm's python3-aiohttp).

Autostart holds the config and the services' state and runs the app; its parts live beside it: lifecycle.py
(starting a service, readiness), idle.py (stopping idle ones), forward.py (serving a request), readiness.py
(what a readiness answer says), health_watch.py (how the running services are), state.py (a service's state,
start errors), websocket.py (WebSocket sessions), parts.py (what the parts share, for the type checker)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from typing import Any, Dict, Optional

import aiohttp
from aiohttp import web

from . import __version__
from . import config_file as configmod
from .config_file import Config, ConfigError
from .docker import Docker
from .forward import ContinueRequest, Forwarding
from .health_watch import HealthWatch
from .idle import IdleStopper
from .lifecycle import Lifecycle
from .metrics import Metrics
from .state import ServiceState
from .websocket import WebSocketRelay

log = logging.getLogger("docker_autostart")


class Autostart(Lifecycle, IdleStopper, Forwarding, WebSocketRelay, HealthWatch):
    """The proxy: its config (reloaded on change or SIGHUP), one ServiceState per Host, and the aiohttp app."""

    def __init__(self, config_path: str, *, docker: Optional[Docker] = None, poll_interval: float = 2.0,
                 idle_tick: float = 1.0, health_interval: float = 30.0):
        self.config_path = config_path
        self.docker = docker or Docker()
        self.poll_interval = poll_interval
        self.idle_tick = idle_tick
        self.health_interval = health_interval
        self.config = Config()
        self.config_error: Optional[str] = None
        self.states: Dict[str, ServiceState] = {}
        self.metrics = Metrics(lambda: sorted(self.states.items()))
        self._locks: Dict[str, asyncio.Lock] = {}
        self._signature: Optional[tuple[int, int, int]] = None
        self._tasks: list[asyncio.Future] = []
        self._stopping = set()
        self._websockets = set()  # (client side, service side) of each relayed WebSocket session
        self.session: Optional[aiohttp.ClientSession] = None
        self.started_at = time.time()
        # extras with their own tasks (monitoring.ContainerMonitor): each gets the app in make_app (.attach(app))
        self.plugins: list = []

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

    # ---------------------------------------------------------------- app
    async def _on_startup(self, app) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            request_class=ContinueRequest,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )
        self._tasks = [asyncio.ensure_future(self._idle_loop())]
        if self.health_interval > 0:
            self._tasks.append(asyncio.ensure_future(self._health_loop()))
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
        app.on_shutdown.append(self._close_websockets)
        app.on_cleanup.append(self._on_cleanup)
        for plugin in self.plugins:
            plugin.attach(app)
        return app


async def serve(autostart: Autostart, host: str, port: int, *, access_log: bool = False,
                shutdown_timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: autostart.reload("SIGHUP"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    autostart.reload("startup")
    app = autostart.make_app()
    runner_kwargs: Dict[str, Any] = {"handle_signals": False}
    if not access_log:
        runner_kwargs["access_log"] = None
    site_kwargs: Dict[str, Any] = {}
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
