"""Serving a request: route by Host, wait for (or start) the service, stream the request and the answer through;
the proxy's own /health and /metrics for other Hosts (Autostart's part, as a mixin)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Optional, cast

import aiohttp
from aiohttp import web
from yarl import URL

from . import __version__
from .headers import downstream_response_headers, routing_host, upstream_request_headers, websocket_upgrade
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .parts import ProxyParts
from .state import PermanentProblem, ServiceState, StartError

log = logging.getLogger("docker_autostart")

NONBLOCKING_GRACE = 1.0  # a non-blocking request waits this long for an already-running service
RETRY_AFTER = 5  # seconds, for non-blocking services while they start
CONNECT_TIMEOUT = 10.0
# requests sent again when the service closed the connection before answering (nothing of their body was read):
# the ones HTTP calls idempotent, and any whose body the service never got (see ContinueRequest)
REPLAYABLE = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
# how long a body waits for the service's '100 Continue' before it is sent anyway (a service that ignores Expect)
CONTINUE_WAIT = 1.0
# aiohttp's client would add these itself; a proxy sends only what the client sent
SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent", "Content-Type")


def json_error(status: int, message: str, err_type: str, host: Optional[str] = None,
               headers: Optional[dict] = None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "code": status}}
    if host:
        body["error"]["host"] = host
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


class ContinueRequest(aiohttp.ClientRequest):
    """A request with a body asks the service first (`Expect: 100-continue`) and sends the body once the service
    reads it. A service that answers before reading (401, 429, 503, 507: its checks come before the upload) gets no
    body byte, so its answer reaches the client instead of a reset connection; and a connection dropped before the
    service answered (Docker's port proxy while the container is still starting) left the client's body unread,
    so the request can be sent again. A service that ignores Expect gets the body after CONTINUE_WAIT, as RFC 9110
    lets a client do. aiohttp's own expect100 waits without end: this adds the timer to its waiter (`_continue`;
    tests/unit/test_autostart_continue.py fails on an aiohttp that changes it)."""

    def update_expect_continue(self, expect: bool = False) -> None:
        super().update_expect_continue(expect)
        waiter = self._continue
        if waiter is not None:
            self.loop.call_later(CONTINUE_WAIT, _go_ahead, waiter)


def _go_ahead(waiter: "asyncio.Future[bool]") -> None:
    if not waiter.done():
        waiter.set_result(True)


class _UpstreamUnreachable(Exception):
    """Connection refused before any request byte was read from the client: safe to retry."""


async def _body(content, touched):
    """The client's request body, chunk by chunk as it arrives (flow-controlled both ways)."""
    while True:
        touched[0] = True
        chunk = await content.readany()
        if not chunk:
            return
        yield chunk


class Forwarding(ProxyParts):
    """Needs from Autostart: states, metrics, session, config_path, config_error, started_at, ensure_ready and
    wake (Lifecycle), and _relay (WebSocketRelay)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = routing_host(request.headers.get("Host"))
        st = self.states.get(host) if host else None
        if st is None:
            return self.own(request, host)
        if st.cfg.wake_path and request.path == st.cfg.wake_path and request.method in ("GET", "HEAD", "POST"):
            resp: web.StreamResponse = self.wake_answer(st)
            self.metrics.requests.labels(host=st.cfg.host, code=resp.status).inc()
            return resp
        st.in_flight += 1
        st.last_active = time.monotonic()
        try:
            resp = await self._serve(request, st)
        finally:
            st.in_flight -= 1
            st.last_active = time.monotonic()
        self.metrics.requests.labels(host=st.cfg.host, code=resp.status).inc()
        return resp

    async def _serve(self, request: web.Request, st: ServiceState) -> web.StreamResponse:
        body_touched = [False]
        for attempt in (1, 2):
            cfg = st.cfg
            try:
                # the start itself gives up after maxWait with the reason; the slack lets it say so
                wait = cfg.max_wait + 2 if cfg.blocking else min(NONBLOCKING_GRACE, cfg.max_wait)
                if not await self.ensure_ready(st, wait):
                    if cfg.blocking:
                        return json_error(504, f"{cfg.host} not ready within maxWait={cfg.max_wait:g}s "
                                          f"({st.phase})", "start_timeout", cfg.host)
                    return json_error(503, f"{cfg.host} is starting, retry in a few seconds", "starting",
                                      cfg.host, headers={"Retry-After": str(RETRY_AFTER)})
            except PermanentProblem:
                pass  # up, and it cannot get better by waiting: the client gets the service's own answer
            except StartError as exc:
                if exc.reason == "docker_unavailable":   # Docker restarting: waiting helps, the client is told when
                    return json_error(503, exc.message, "docker_unavailable", cfg.host,
                                      headers={"Retry-After": str(RETRY_AFTER)})
                return json_error(exc.status, exc.message,
                                  "start_timeout" if exc.status == 504 else "start_failed", cfg.host)
            try:
                if websocket_upgrade(request.method, request.headers):
                    return await self._relay(request, st)   # websocket.py: open for the session's whole life
                return await self._forward(request, st, body_touched)
            except _UpstreamUnreachable as exc:
                st.invalidate()
                if attempt == 2 or body_touched[0]:
                    self.metrics.upstream_errors.labels(host=cfg.host, kind="connect").inc()
                    return json_error(502, f"{cfg.host} unreachable: {exc}", "upstream_unreachable", cfg.host)
                log.warning("host=%s refused the connection; checking its containers", cfg.host)
        raise AssertionError("unreachable")

    async def _forward(self, request: web.Request, st: ServiceState, body_touched) -> web.StreamResponse:
        cfg = st.cfg
        path = request.raw_path if request.raw_path.startswith("/") else request.rel_url.path_qs
        url = URL(f"http://127.0.0.1:{cfg.proxy_port}{path}", encoded=True)
        headers = upstream_request_headers(request.headers, remote=request.remote, scheme=request.scheme)
        data = _body(request.content, body_touched) if request.body_exists else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=cfg.upstream_timeout)
        try:
            async with cast(aiohttp.ClientSession, self.session).request(request.method, url, headers=headers, data=data,
                                            allow_redirects=False, skip_auto_headers=SKIP_AUTO_HEADERS,
                                            timeout=timeout, expect100=data is not None) as up:
                out_headers = downstream_response_headers(up.headers)
                if request.method == "HEAD" or up.status in (204, 304) or up.status < 200:
                    return web.Response(status=up.status, reason=up.reason, headers=out_headers)
                resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out_headers)
                await resp.prepare(request)
                try:
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        return resp  # the client went away; leaving the block closes upstream
                    kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "broken"
                    self.metrics.upstream_errors.labels(host=cfg.host, kind=kind).inc()
                    log.warning("host=%s upstream %s mid-response on %s %s: %s", cfg.host, kind,
                                request.method, request.path, type(exc).__name__)
                    transport.close()  # a truncated body must not look complete to the client
                    return resp
                await resp.write_eof()
                return resp
        except aiohttp.ClientConnectorError as exc:
            raise _UpstreamUnreachable(str(exc)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # the service went away before it answered (its container stopped: Docker restarting, a deploy
            # recreating it): a request that can be sent again is, once the service is ready again; one whose body
            # waited for '100 Continue' was never read by the service, so it cannot have acted on it
            if not body_touched[0] and (request.method in REPLAYABLE or data is not None):
                raise _UpstreamUnreachable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
            self.metrics.upstream_errors.labels(host=cfg.host, kind="broken").inc()
            st.invalidate()
            return json_error(502, f"{cfg.host} upstream error: {type(exc).__name__}: {exc}".rstrip(": "),
                              "upstream_error", cfg.host)
        except asyncio.TimeoutError:
            self.metrics.upstream_errors.labels(host=cfg.host, kind="timeout").inc()
            return json_error(504, f"{cfg.host} did not answer within {cfg.upstream_timeout:g}s",
                              "upstream_timeout", cfg.host)
        except aiohttp.ClientError as exc:
            self.metrics.upstream_errors.labels(host=cfg.host, kind="broken").inc()
            st.invalidate()
            return json_error(502, f"{cfg.host} upstream error: {type(exc).__name__}: {exc}".rstrip(": "),
                              "upstream_error", cfg.host)

    def wake_answer(self, st: ServiceState) -> web.Response:
        """The service's wake path (config "wakePath"): a page that will call the service asks for it when it
        loads, so the start runs while its user picks a file. Answered at once, never forwarded: 200 when the
        service is ready, 202 while it starts (this request started it, or joined the start under way)."""
        body = {"service": st.cfg.name, "host": st.cfg.host}
        if self.wake(st):
            return web.json_response({**body, "status": "ready"})
        return web.json_response({**body, "status": "starting"}, status=202)

    def own(self, request: web.Request, host: Optional[str]) -> web.Response:
        """The proxy's own endpoints, for Hosts that are not a configured service."""
        if request.path == "/health" and request.method in ("GET", "HEAD"):
            body = {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1),
                "config": self.config_path,
                "config_error": self.config_error,
                "services": {h: {"name": s.cfg.name, "state": s.describe(), "in_flight": s.in_flight,
                                 "websockets": s.websockets, "blocking": s.cfg.blocking, "last_error": s.last_error,
                                 "health": s.health,
                                 "health_age_s": round(time.monotonic() - s.health_at, 1) if s.health else None}
                             for h, s in sorted(self.states.items())},
            }
            return web.json_response(body)
        if request.path == "/metrics" and request.method in ("GET", "HEAD"):
            return web.Response(body=self.metrics.render().encode(),
                                headers={"Content-Type": METRICS_CONTENT_TYPE})
        return json_error(404, f"no service is configured for host {host!r}" if host else
                          "no Host header and no such endpoint", "unknown_host", host)
