"""How the running services are: every `health_interval` seconds the proxy reads the readiness path of each
service it has seen ready, and keeps what it says (`ok`, or `degraded` and why: readiness.health_summary). The
proxy's own /health and /metrics show it, so that monitoring reads it without waking anything: a stopped or
starting service is never asked, no docker command runs, and the reads are no activity for the idle stop
(Autostart's part, as a mixin)."""

from __future__ import annotations

import asyncio
import json
import logging

from typing import cast

import aiohttp

from .readiness import PERMANENT_BODY_LIMIT, health_summary, read_some
from .parts import ProxyParts
from .state import ServiceState

log = logging.getLogger("docker_autostart")


class HealthWatch(ProxyParts):
    """Needs from Autostart: states, session and health_interval."""

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            for st in list(self.states.values()):
                if st.ready and not st.starting and st.cfg.readiness_path:
                    try:
                        await self.read_health(st)
                    except Exception:  # never let the watch die
                        log.exception("reading the health of host=%s failed", st.cfg.host)

    async def read_health(self, st: ServiceState) -> None:
        """One read of the service's readiness path; a service that does not answer keeps what it said last (the
        next request finds out why, and starts it again if its containers are gone)."""
        url = f"http://127.0.0.1:{st.cfg.proxy_port}{st.cfg.readiness_path}"
        try:
            async with cast(aiohttp.ClientSession, self.session).get(url, timeout=aiohttp.ClientTimeout(total=5), allow_redirects=False) as r:
                body = await read_some(r.content, PERMANENT_BODY_LIMIT)
            st.record_health(health_summary(json.loads(body.decode("utf-8"))))
        except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError, ValueError):
            return
