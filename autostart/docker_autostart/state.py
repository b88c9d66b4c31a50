"""What the proxy knows of each service (ServiceState) and how a start fails (StartError, PermanentProblem)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from .config_file import ServiceConfig

log = logging.getLogger("docker_autostart")

RUNNING_STATES = ("running", "restarting")


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


class ServiceState:
    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.in_flight = 0
        self.websockets = 0  # WebSocket sessions open (each is one of in_flight while it lasts)
        self.last_active = time.monotonic()
        self.ready = False  # seen running and answering its readiness path, containers not restarted since
        self.verified_at = 0.0  # when `ready` was last confirmed (docker inspect)
        self.started_sig: tuple = ()  # the containers' StartedAt when last seen ready
        self.stopped: Optional[bool] = None  # True once we stopped it or saw it stopped
        self.start_task: Optional[asyncio.Future] = None
        self.last_error: Optional[str] = None
        self.permanent: Optional[str] = None  # the permanent problem its readiness answer last reported
        self.phase = "idle"  # what a start is doing, for the 504 message
        self.health: Optional[dict] = None  # what its own /health said last (readiness.health_summary)
        self.health_at = 0.0  # when (monotonic)
        self.converged_ns = 0  # wall clock (ns) just before the proxy's last compose up that worked: its files seen
        self.deferred: list = []  # the project's other containers, to start once the service is ready

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

    def record_health(self, summary: Optional[dict]) -> None:
        """Keep what the service's /health said; a change of what it reports failing is logged once."""
        if summary is None:
            return
        before = (self.health or {}).get("degraded") or []
        after = summary.get("degraded") or []
        if after != before:
            if after:
                log.warning("host=%s degraded: %s (its /health)", self.cfg.host, ", ".join(after))
            else:
                log.info("host=%s healthy again (its /health)", self.cfg.host)
        self.health, self.health_at = summary, time.monotonic()
