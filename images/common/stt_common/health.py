"""GET /health: 200 once the default model is loaded, 503 before; public."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

PERMANENT_HEADER = "X-Health-Permanent"


def health_router(service) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/health", summary="Readiness: 200 once the default model is loaded")
    def health() -> JSONResponse:
        if service.error:
            code = getattr(service, "error_code", None)
            if code:   # permanent: retrying cannot help (the autostart proxy's contract, autostart/README.md)
                return JSONResponse({"status": "error", "error": service.error, "code": code}, status_code=503,
                                    headers={PERMANENT_HEADER: "true"})
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
        jobs = getattr(service, "jobs", None)
        if jobs is not None and jobs.enabled:
            # queued and running jobs: the autostart proxy does not stop a service that has any
            try:
                counts = jobs.counts()
                body["jobs"] = {"queued": counts["queued"], "running": counts["running"]}
            except Exception as e:  # noqa: BLE001 - Redis away: say so, stay healthy for synchronous requests
                body["jobs"] = {"error": type(e).__name__}
        return JSONResponse(body)

    return router
