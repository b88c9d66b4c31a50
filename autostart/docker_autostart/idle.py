"""Stopping idle services: a compose project is stopped when all its services have been idle for their
idleTimeout, unless a request came in meanwhile or its /health reports jobs in progress (Autostart's part, as a
mixin)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from .docker import DockerError
from .readiness import jobs_pending
from .parts import ProxyParts
from .state import RUNNING_STATES

log = logging.getLogger("docker_autostart")


class IdleStopper(ProxyParts):
    """Needs from Autostart: states, docker, metrics, session, idle_tick, _stopping and _lock (Lifecycle)."""

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
            task.add_done_callback(lambda t, d=compose_dir: self._stopping.discard(d))  # type: ignore[misc]

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
            busy = await jobs_pending(self.session, sts)
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
