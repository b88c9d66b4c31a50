"""`/v1/realtime` (the WebSocket), the client-secret routes and the `/live` captions page: two routers whose
handlers get the service's Hub through `Depends(realtime_hub)`."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Optional, cast

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from stt_common import APIError, bad_request, check_key, public_name, too_large

from . import events
from .config import SessionConfig, apply_beta, apply_ga
from .events import ProtocolError
from .secrets import ClientSecrets
from .session import OPENAI_MODELS, Session

log = logging.getLogger("faster_server.realtime")

KEY_PROTOCOL = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"
MAX_JSON_BODY = 64 * 1024
STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"live.js": "text/javascript", "pcm-worklet.js": "text/javascript"}
CLOSE_TIMEOUT = 5.0


class Hub:
    """What the sessions of one service share: its settings, model cache and names, inference executor, the
    client secrets, and the count of open sessions."""

    def __init__(self, settings, cache, names, executor, metrics):
        self.settings, self.cache, self.names, self.executor = settings, cache, names, executor
        self.open = 0
        self.secrets = ClientSecrets(settings.realtime_client_secret_ttl, settings.realtime_max_client_secrets)
        r = metrics.registry
        self.m_open = Gauge("stt_realtime_sessions_open", "Realtime sessions open", registry=r)
        self.m_sessions = Counter("stt_realtime_sessions_ended_total", "Realtime sessions ended, by how",
                                  ["outcome"], registry=r)
        self.m_items = Counter("stt_realtime_items_total", "Realtime items transcribed, by result", ["result"],
                               registry=r)
        self.m_audio = Counter("stt_realtime_audio_seconds_total", "Seconds of audio in transcribed realtime items",
                               registry=r)
        self.m_latency = Histogram("stt_realtime_completion_seconds",
                                   "From the end of an utterance's audio to its completed event",
                                   buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30), registry=r)

    def count_item(self, result: str, seconds: float = 0.0, latency: Optional[float] = None) -> None:
        self.m_items.labels(result).inc()
        if result == "completed":
            self.m_audio.inc(seconds)
            if latency is not None:
                self.m_latency.observe(latency)

    def ended(self, outcome: str) -> None:
        self.m_sessions.labels(outcome).inc()

    def model_name(self, config: SessionConfig) -> str:
        return config.model or public_name(self.names.default_id)

    def check_model(self, config: SessionConfig, param: str) -> None:
        """A 404 now for a model the session could not load (the language is checked when it opens)."""
        if config.model and config.model not in OPENAI_MODELS:
            try:
                self.names.resolve(config.model)
            except APIError as e:
                raise APIError(e.status, e.message, param=f"{param}.model", code=e.code) from None


async def _json_body(request: Request) -> dict:
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise too_large(f"The request body is larger than {MAX_JSON_BODY // 1024} KiB.")
        chunks.append(chunk)
    if not chunks:
        return {}
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def _config_error(e: ProtocolError) -> APIError:
    return APIError(400, e.message, param=e.param, code=e.code)


def realtime_hub(conn: HTTPConnection) -> Hub:
    """The service's Hub, which build_app keeps in `app.state.realtime` (HTTP routes and the WebSocket alike)."""
    return conn.app.state.realtime


def _ttl_of(body: dict, settings) -> Optional[int]:
    expires = body.get("expires_after")
    if expires is None:
        return None
    if not isinstance(expires, dict) or expires.get("anchor", "created_at") != "created_at":
        raise bad_request("expires_after: {\"anchor\": \"created_at\", \"seconds\": N}.", param="expires_after",
                          code="invalid_value")
    seconds = expires.get("seconds", settings.realtime_client_secret_ttl)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise bad_request("expires_after.seconds must be an integer.", param="expires_after.seconds",
                          code="invalid_value")
    return seconds


router = APIRouter()        # mounted by build_app on the service's authenticated router: the client secrets
live_router = APIRouter()   # mounted on the app: the WebSocket (it checks its key or client secret itself), /live


@router.post("/v1/realtime/client_secrets", tags=["realtime"],
             summary="An ephemeral client secret for one Realtime transcription session (browsers)")
async def client_secrets(request: Request, hub: Hub = Depends(realtime_hub)):
    """OpenAI's `client.realtime.client_secrets.create(session={"type": "transcription", ...})`. The secret
    opens one session within `expires_after.seconds` (at most STT_REALTIME_CLIENT_SECRET_TTL), presented as
    the WebSocket subprotocol `openai-insecure-api-key.<value>`; the session starts with this configuration."""
    body = await _json_body(request)
    try:
        config = apply_ga(SessionConfig(), body.get("session", {"type": "transcription"}))
    except ProtocolError as e:
        raise _config_error(e) from None
    hub.check_model(config, "session.audio.input.transcription")
    value, expires_at = hub.secrets.mint(config, _ttl_of(body, hub.settings))
    return JSONResponse({"value": value, "expires_at": expires_at,
                         "session": config.to_ga(events.new_id("sess"), hub.model_name(config), expires_at)})


@router.post("/v1/realtime/transcription_sessions", tags=["realtime"],
             summary="The beta Realtime API's transcription session with a client secret")
async def transcription_sessions(request: Request, hub: Hub = Depends(realtime_hub)):
    body = await _json_body(request)
    secret = body.pop("client_secret", None) or {}
    try:
        config = apply_beta(SessionConfig(), body)
    except ProtocolError as e:
        raise _config_error(e) from None
    hub.check_model(config, "input_audio_transcription")
    value, expires_at = hub.secrets.mint(config, _ttl_of(secret if isinstance(secret, dict) else {}, hub.settings))
    session = config.to_beta(events.new_id("sess"), hub.model_name(config), expires_at)
    return JSONResponse({**session, "client_secret": {"value": value, "expires_at": expires_at}})


@live_router.websocket("/v1/realtime")
async def realtime(ws: WebSocket, hub: Hub = Depends(realtime_hub)):
    await serve_session(ws, hub)


@live_router.get("/live", include_in_schema=False)
async def live_page():
    return FileResponse(STATIC / "live.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@live_router.get("/live/{name}", include_in_schema=False)
async def live_asset(name: str):
    if name not in PAGES:
        raise APIError(404, f"Invalid URL (GET /live/{name[:64]})")
    return FileResponse(STATIC / name, media_type=PAGES[name], headers={"Cache-Control": "no-cache"})


def _authenticate(hub: Hub, authorization: Optional[str], presented: list) -> tuple:
    """(allowed, the session config a client secret carries or None)."""
    keys = hub.settings.api_key_set
    config = None
    for value in presented:
        config = hub.secrets.redeem(value) if config is None else config
    if not keys or config is not None:
        return True, config
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credentials and check_key(credentials.strip(), keys):
        return True, None
    return any(check_key(v, keys) for v in presented), None


async def serve_session(ws: WebSocket, hub: Hub) -> None:
    settings = hub.settings
    offered = [p for p in (ws.scope.get("subprotocols") or []) if isinstance(p, str)]
    presented = [p[len(KEY_PROTOCOL):] for p in offered if p.startswith(KEY_PROTOCOL)]
    plain = [p for p in offered if not p.startswith(KEY_PROTOCOL)]
    # a browser that offered subprotocols drops a connection that picks none: "realtime" as OpenAI answers
    chosen = "realtime" if "realtime" in offered else (plain[0] if plain else (offered[0] if offered else None))
    beta = BETA_PROTOCOL in offered or "realtime=v1" in ws.headers.get("openai-beta", "")
    lock = asyncio.Lock()

    async def send(ev: dict) -> None:
        async with lock:
            try:
                await ws.send_text(events.dumps(ev))
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass   # gone: the reader sees the disconnect

    async def end(ev: Optional[dict], code: int, reason: str = "") -> None:
        try:
            if ev is not None:
                await asyncio.wait_for(send(ev), CLOSE_TIMEOUT)
            await asyncio.wait_for(ws.close(code, reason[:120]), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
            pass

    await ws.accept(subprotocol=chosen)
    allowed, config = _authenticate(hub, ws.headers.get("authorization"), presented)
    if not allowed:
        hub.ended("unauthorized")
        await end(events.error_event("Incorrect API key or client secret provided (send 'Authorization: Bearer "
                                     "<key>', or the subprotocol openai-insecure-api-key.<client secret>).",
                                     code="invalid_api_key"), events.CLOSE_POLICY, "invalid_api_key")
        return
    intent = ws.query_params.get("intent")
    if intent not in (None, "", "transcription"):
        hub.ended("refused")
        await end(events.error_event(f"This server runs transcription sessions only: connect with "
                                     f"?intent=transcription, not '{intent[:64]}'.", code="unsupported_session_type",
                                     param="intent"), events.CLOSE_POLICY, "unsupported_session_type")
        return
    if settings.realtime_max_sessions <= 0 or hub.open >= settings.realtime_max_sessions:
        hub.ended("full")
        await end(events.error_event(f"The server holds its limit of {settings.realtime_max_sessions} realtime "
                                     f"sessions (STT_REALTIME_MAX_SESSIONS). Retry later.",
                                     code="session_limit_reached", type="server_error"),
                  events.CLOSE_TRY_LATER, "session_limit_reached")
        return
    hub.open += 1
    hub.m_open.set(hub.open)
    session = None
    outcome = "closed"
    tasks = []
    try:
        config = config or SessionConfig()
        if ws.query_params.get("model") and config.model is None:
            config = dataclasses.replace(config, model=ws.query_params["model"][:200])
        session = Session(hub, send, config, beta=beta)
        param = "session.input_audio_transcription" if beta else "session.audio.input.transcription"
        try:
            await session.use_model(config.model, config.language, param)
        except ProtocolError as e:
            # the secret's or the URL's model cannot serve: said, and the session starts on the default model
            await send(e.event())
            session.config = dataclasses.replace(config, model=None, language=None)
            await session.use_model(None, None, param)
        await session.created()
        tasks = [asyncio.ensure_future(session.worker()), asyncio.ensure_future(_watch(session)),
                 asyncio.ensure_future(_read(ws, session, send))]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finished = done.pop()
        if finished is tasks[1]:      # the watchdog: too long, or idle
            outcome = cast(str, finished.result())   # _watch and _read return one; the worker's is None
            message = (f"The session reached its maximum duration of {settings.realtime_max_session_seconds:g} s."
                       if outcome == "expired" else
                       f"The session was idle for {settings.realtime_idle_timeout:g} s (no speech, no event) and "
                       f"was closed.")
            await end(events.error_event(message, code=f"session_{'expired' if outcome == 'expired' else 'idle_timeout'}"),
                      events.CLOSE_NORMAL, outcome)
        elif finished is tasks[2]:
            outcome = cast(str, finished.result())
            if outcome == "too_big":
                await end(None, events.CLOSE_TOO_BIG, "message too big")
        else:                         # the worker stopped: a bug, said as a server error
            exc = finished.exception()
            log.error("realtime session worker failed", exc_info=exc)
            outcome = "error"
            await end(events.error_event("The server had an error in this session.", code="internal_error",
                                         type="server_error"), events.CLOSE_ERROR, "internal_error")
    except APIError as e:   # the default model cannot serve (device_unavailable, a load that timed out)
        outcome = "error"
        await end(events.error_event(e.message, code=e.code, type=e.type), events.CLOSE_ERROR, e.code or "error")
    finally:
        for t in tasks:
            t.cancel()
        if session is not None:
            session.close()
        for t in tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001 - cancelled or already reported
                pass
        if session is not None:
            await session.release_model()
        hub.open -= 1
        hub.m_open.set(hub.open)
        hub.ended(outcome)


async def _watch(session: Session) -> str:
    s = session.settings
    while True:
        now = time.monotonic()
        deadline = session.started + s.realtime_max_session_seconds
        idle = session.idle_since() + s.realtime_idle_timeout
        if now >= deadline:
            return "expired"
        if now >= idle:
            return "idle"
        await asyncio.sleep(max(0.05, min(deadline, idle) - now))


async def _read(ws: WebSocket, session: Session, send) -> str:
    """Client events, one at a time, until the client leaves; the socket is not read while the session's
    transcription backlog is full (TCP pushes back on the client)."""
    while True:
        await session.wait_backlog()
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return "too_big" if msg.get("code") == events.CLOSE_TOO_BIG else "closed"
        text = msg.get("text")
        if text is None:
            await send(events.error_event("Binary messages are not part of the Realtime API: send each event as a "
                                          "JSON text message.", code="invalid_event"))
            continue
        try:
            ev = json.loads(text)
        except ValueError:
            await send(events.error_event("The message is not valid JSON.", code="invalid_json"))
            continue
        if not isinstance(ev, dict):
            await send(events.error_event("Each message must be one JSON object (a client event).",
                                          code="invalid_event"))
            continue
        client_id = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
        try:
            await session.handle(ev)
        except ProtocolError as e:
            await send(e.event(client_id[:128] if client_id else None))
