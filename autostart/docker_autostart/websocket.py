"""WebSocket sessions through the proxy (live transcription's /v1/realtime, or any service's): the upgrade is
made to the service, then messages are relayed both ways until either side closes, whose close code and reason
the other side gets (Autostart's part, as a mixin).

The session is one request in flight for as long as it is open, so an idle stop never cuts it. Each leg keeps
itself alive: the service pings the proxy (uvicorn, every 20 s), the proxy pings the client every HEARTBEAT
seconds, which keeps nginx's read timeout from ending a quiet session and closes one whose client vanished.
Both legs are flow-controlled: a service that stops reading (its backlog is full) stops the proxy reading from the
client. aiohttp 3.8 APIs only (Debian bookworm's python3-aiohttp)."""

from __future__ import annotations

import asyncio
import logging
from typing import Tuple, cast

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from .forward import _UpstreamUnreachable, json_error
from .headers import upstream_request_headers
from .parts import ProxyParts
from .state import ServiceState

log = logging.getLogger("docker_autostart")

HEARTBEAT = 20.0               # seconds between the proxy's pings to the client
MAX_MESSAGE = 16 * 1024 * 1024  # the largest message relayed (uvicorn's own default); larger closes with 1009
# the handshake's own headers: each leg has its own handshake
HANDSHAKE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol")
# close codes that cannot be sent in a close frame (RFC 6455 7.4.1): what the other side gets instead
GONE_CLIENT = 1001    # going away: the client vanished
GONE_SERVICE = 1011   # the service failed (the openai SDK may reconnect after it)


async def _pipe(src, dst) -> Tuple[int, str]:
    """Messages from `src` to `dst` until `src` closes; its close code and reason."""
    while True:
        msg = await src.receive()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            return int(msg.data or 1000), msg.extra or ""
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return src.close_code or 1006, ""


class WebSocketRelay(ProxyParts):
    """Needs from Autostart: metrics, session, and _websockets (the open relays, closed at shutdown)."""

    async def _relay(self, request: web.Request, st: ServiceState) -> web.StreamResponse:
        cfg = st.cfg
        path = request.raw_path if request.raw_path.startswith("/") else request.rel_url.path_qs
        url = URL(f"http://127.0.0.1:{cfg.proxy_port}{path}", encoded=True)
        headers = upstream_request_headers(request.headers, remote=request.remote, scheme=request.scheme)
        for name in HANDSHAKE:
            headers.popall(name, None)
        offered = [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", ())
                   for p in v.split(",") if p.strip()]
        try:
            session = cast(aiohttp.ClientSession, self.session)
            up = await session.ws_connect(url, protocols=offered, headers=headers, autoclose=True,
                                          autoping=True, compress=0, max_msg_size=MAX_MESSAGE)
        except aiohttp.WSServerHandshakeError as exc:   # the service answered the upgrade with an HTTP status
            return json_error(exc.status, f"{cfg.host} refused the WebSocket: {exc.status} {exc.message}",
                              "upstream_refused", cfg.host)
        except aiohttp.ClientConnectorError as exc:
            raise _UpstreamUnreachable(str(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.metrics.upstream_errors.labels(host=cfg.host, kind="broken").inc()
            return json_error(502, f"{cfg.host} WebSocket upgrade failed: {type(exc).__name__}: {exc}".rstrip(": "),
                              "upstream_error", cfg.host)
        down = web.WebSocketResponse(protocols=[up.protocol] if up.protocol else [], autoclose=True, autoping=True,
                                     heartbeat=HEARTBEAT, compress=False, max_msg_size=MAX_MESSAGE)
        pair = (down, up)
        self._websockets.add(pair)
        st.websockets += 1
        try:
            await down.prepare(request)
            await self._run_relay(down, up, cfg.host)
        finally:
            st.websockets -= 1
            self._websockets.discard(pair)
            await up.close()
        return down

    async def _run_relay(self, down: web.WebSocketResponse, up, host: str) -> None:
        to_service = asyncio.ensure_future(_pipe(down, up))
        to_client = asyncio.ensure_future(_pipe(up, down))
        try:
            done, _ = await asyncio.wait({to_service, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_service, to_client):
                task.cancel()
            for task in (to_service, to_client):
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the socket it wrote to is gone
                    pass
        first = done.pop()
        try:
            code, reason = first.result()
        except Exception as exc:  # noqa: BLE001 - a send failed: that side is gone
            log.info("host=%s WebSocket relay ended: %s", host, type(exc).__name__)
            code, reason = 1006, ""
        if first is to_service:     # the client closed (or vanished): the service is told at once
            await up.close(code=code if code not in (1005, 1006) else GONE_CLIENT, message=reason.encode()[:120])
            await down.close()
        else:                       # the service closed: the client gets its code and reason
            await down.close(code=code if code not in (1005, 1006) else GONE_SERVICE, message=reason.encode()[:120])

    async def _close_websockets(self, app=None) -> None:
        """At shutdown: every relayed session is told the proxy is going away (1001), so clients reconnect."""
        for down, up in list(self._websockets):
            try:
                await down.close(code=GONE_CLIENT, message=b"proxy shutting down")
            finally:
                await up.close(code=GONE_CLIENT, message=b"proxy shutting down")

