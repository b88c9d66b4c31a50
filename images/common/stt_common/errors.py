"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} for every failure."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("stt_common.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: Optional[str] = None, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized(message: str = "Incorrect API key provided.") -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def not_found(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    return APIError(404, message, param=param, code=code)


def too_large(message: str) -> APIError:
    return APIError(413, message, param="file", code="file_too_large")


def unavailable(message: str, retry_after: float = 1, code: Optional[str] = None) -> APIError:
    ra = str(max(1, int(round(retry_after))))
    return APIError(503, message, type="server_error", code=code, headers={"Retry-After": ra})


def _loc_param(loc: Any) -> Optional[str]:
    parts = [str(p) for p in (loc or ()) if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or None


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {}
    param = _loc_param(first.get("loc"))
    msg = first.get("msg", "Invalid request")
    message = f"Invalid value for '{param}': {msg}" if param else str(msg)
    return JSONResponse(error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif status == 405:
        message = f"Method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    type_ = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, type_, None, None), status_code=status,
                        headers=getattr(exc, "headers", None))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("The server had an error while processing your request.", "server_error",
                                   None, "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    from .dependencies import install_handlers

    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]  # Starlette types a handler's exception as Exception; it calls it with this class
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]  # Starlette types a handler's exception as Exception; it calls it with this class
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]  # Starlette types a handler's exception as Exception; it calls it with this class
    # a dependency's failure (Redis, a full disk) is a documented 503/507 (stt_common.dependencies), never a 500
    install_handlers(app)
    app.add_exception_handler(Exception, unexpected_error)
