"""GET /health: 200 once the default model is loaded, 503 before; public."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse


def health_router(service) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/health", summary="Readiness: 200 once the default model is loaded")
    def health() -> JSONResponse:
        if service.error:
            return JSONResponse({"status": "error", "error": service.error}, status_code=503)
        try:
            ready = bool(service.ready())
        except Exception:  # noqa: BLE001
            ready = False
        if not ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        body = {"status": "ok"}
        try:
            body.update(service.details() or {})
        except Exception:  # noqa: BLE001
            pass
        return JSONResponse(body)

    return router
