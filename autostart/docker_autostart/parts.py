"""What the proxy's parts (lifecycle.py, idle.py, forward.py, websocket.py, health_watch.py) share through `self`:
the attributes Autostart.__init__ sets and the methods one part calls on another. Annotations only: nothing here
exists at run time, it tells the type checker what each mixin may rely on."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Dict, Optional

import aiohttp
from aiohttp import web

from .config_file import Config
from .docker import Docker
from .metrics import Metrics
from .state import ServiceState


class ProxyParts:
    config_path: str
    docker: Docker
    poll_interval: float
    idle_tick: float
    health_interval: float
    config: Config
    config_error: Optional[str]
    states: Dict[str, ServiceState]
    metrics: Metrics
    _locks: Dict[str, asyncio.Lock]
    _stopping: set
    _websockets: set
    # opened in the app's startup, before any handler or background task runs (the parts cast it to ClientSession)
    session: Optional[aiohttp.ClientSession]
    started_at: float

    if TYPE_CHECKING:
        def _lock(self, compose_dir: str) -> asyncio.Lock: ...

        async def ensure_ready(self, st: ServiceState, wait: float) -> bool: ...

        def wake(self, st: ServiceState) -> bool: ...

        async def _relay(self, request: web.Request, st: ServiceState) -> web.StreamResponse: ...
