"""GET /health: 200 once the default model is loaded (`ok`, or `degraded` with why when a dependency fails), 503
before; public. The autostart proxy reads it to decide readiness and whether jobs keep a service busy, monitoring
to say why a service answers 503/507 (stt_common.dependencies)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from .dependencies import REDIS, describe_error, failure

if TYPE_CHECKING:
    from .app import AppRuntime

PERMANENT_HEADER = "X-Health-Permanent"

health_router = APIRouter(tags=["service"])   # mounted on the app by create_app: public, no API key


def app_runtime(request: Request) -> AppRuntime:
    """The service's AppRuntime, which create_app keeps in `app.state.service`."""
    return request.app.state.service


@health_router.get("/health", summary="Readiness: 200 once the default model is loaded")
def health(service: AppRuntime = Depends(app_runtime)) -> JSONResponse:
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
    body: dict[str, Any] = {"status": "ok"}
    try:
        body.update(service.details() or {})
    except Exception:  # noqa: BLE001
        pass
    deps = service.dependencies.check()
    jobs = getattr(service, "jobs", None)
    if jobs is not None and jobs.enabled:
        # queued and running jobs: the autostart proxy does not stop a service that has any; unknown while
        # Redis is away (the proxy then keeps it running too)
        if deps.get(REDIS, {}).get("status", "ok") != "ok":
            body["jobs"] = {"error": deps[REDIS].get("code", "jobs_unavailable")}
        else:
            try:
                counts = jobs.counts()
                body["jobs"] = {"queued": counts["queued"], "running": counts["running"]}
            except Exception as e:  # noqa: BLE001 - said below; synchronous requests are still served
                hit = failure(e)
                code = hit[1].code if hit else "internal_error"
                deps[REDIS] = {"status": "unavailable", "code": code, "error": describe_error(e)}
                body["jobs"] = {"error": code}
    degraded = sorted(name for name, state in deps.items() if state.get("status") != "ok")
    if degraded:
        body["status"] = "degraded"
        body["degraded"] = degraded
    if deps:
        body["dependencies"] = deps
    return JSONResponse(body)
