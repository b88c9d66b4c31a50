"""Every route of both services is a handler of a module (on an APIRouter, what it needs from `Depends`), never a
closure registered inside a build function: a handler can be read, imported and tested where it is written."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute


def handlers(routes) -> list:
    """(path, endpoint) of every route, those of included routers too."""
    out = []
    for r in routes:
        included = getattr(r, "original_router", None)   # an included router (FastAPI keeps it whole)
        if included is not None:
            out += handlers(included.routes)
        elif isinstance(r, (APIRoute, APIWebSocketRoute)):
            out.append((r.path, r.endpoint))
    return out


@pytest.fixture
def everything_on(tmp_path, monkeypatch):
    """Settings that mount every optional router: jobs, the link (worker hosts), enrolled voices, live sessions."""
    workers = tmp_path / "workers"
    workers.write_text("w1 " + "0" * 64 + "\n")
    for name, value in {"STT_REDIS_URL": "redis://127.0.0.1:1/0", "STT_JOBS_DIR": str(tmp_path),
                        "STT_LINK_WORKERS_FILE": str(workers), "STT_SPEAKERS_DIR": str(tmp_path),
                        "STT_API_KEYS": "k1", "STT_REALTIME_MAX_SESSIONS": "2"}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("service", ["faster", "whisperx"])
def test_no_route_is_a_closure(service, everything_on):
    if service == "faster":
        from faster_server.app import build_app
        from faster_server.settings import FasterSettings as Settings
    else:
        from whisperx_server.app import build_app
        from whisperx_server.settings import Settings
    routes = handlers(build_app(Settings()).routes)
    paths = {path for path, _ in routes}
    assert {"/health", "/metrics", "/v1/jobs", "/internal/link/next"} <= paths
    assert ("/v1/realtime" in paths) == (service == "faster") and ("/v1/speakers" in paths) == (service == "whisperx")
    closures = [(path, fn.__qualname__) for path, fn in routes if "<locals>" in fn.__qualname__]
    assert not closures
