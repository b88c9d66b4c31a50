"""create_app: error handlers, auth, /health, /metrics, Swagger; each service adds its engine and routes."""
from __future__ import annotations

from typing import Callable, Optional

from fastapi import APIRouter, Depends, FastAPI

from .auth import require_api_key
from .dependencies import Dependencies
from .errors import install_error_handlers
from .health import health_router
from .metrics import Metrics, MetricsMiddleware, metrics_router


class AppRuntime:
    """One service's FastAPI app and what its routes share: settings, metrics, the authenticated router (`api`),
    the readiness and failure /health reports, the jobs, the dependencies' probes. (The deploy's `Service` in
    stages/settings.py is something else: a service entry of group data.)"""

    def __init__(self, app: FastAPI, settings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.api = APIRouter(dependencies=[Depends(require_api_key(settings))])
        self.ready: Callable[[], bool] = lambda: False
        self.details: Callable[[], dict] = lambda: {}
        self.error: Optional[str] = None
        self.error_code: Optional[str] = None   # set for a permanent problem (fail(..., code=...))
        self.jobs = None  # stt_common.jobs.Jobs when the service takes asynchronous jobs
        # Redis, the jobs' disk (registered by the jobs): /health's `degraded`, stt_dependency_up
        self.dependencies = Dependencies(metrics)
        self._mounted = False

    def fail(self, message: str, code: Optional[str] = None) -> None:
        """Mark the service broken (e.g. the default model cannot load): /health says so. With `code` the problem
        is permanent (STT_DEVICE=cuda without a GPU: `device_unavailable`, the code every answer then carries):
        /health adds the code and the header `X-Health-Permanent: true`, so that the autostart proxy stops
        waiting for readiness and lets requests through to this service's own error (autostart/README.md)."""
        self.error, self.error_code = message, code

    def recover(self) -> None:
        """The failure is over (e.g. a later load of the default model worked)."""
        self.error, self.error_code = None, None

    def mount(self) -> None:
        if not self._mounted:
            self.app.include_router(self.api)
            self._mounted = True


def create_app(settings, title: str, version: str = "0.1.0", description: str = "",
               lifespan=None, metrics: Optional[Metrics] = None):
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    metrics = metrics or Metrics()
    svc = AppRuntime(app, settings, metrics)
    app.state.service = svc
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(health_router)
    app.include_router(metrics_router)
    return app, svc
