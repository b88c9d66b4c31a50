"""WebSocket sessions through the proxy (live transcription's /v1/realtime): the first connection wakes the service,
messages go both ways with the subprotocol and close codes, an open session counts as a request in flight so no
idle stop cuts it, and a hang-up on either side closes the other. Real Docker, real compose, the proxy under
Debian's aiohttp 3.8 when installed."""

import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .conftest import wait_for

pytestmark = pytest.mark.docker

M = "docker_autostart_"


def ws(proxy, svc, path="/ws", **kw):
    """A WebSocket to the service's Host, through the proxy on 127.0.0.1."""
    return connect(f"ws://{svc.host}:{proxy.port}{path}", sock=socket.create_connection(("127.0.0.1", proxy.port)),
                   additional_headers=kw.pop("headers", {}), open_timeout=120, max_size=None, **kw)


def test_first_connection_wakes_the_service_and_messages_go_both_ways(make_service, start_proxy):
    svc = make_service(health_delay=1)
    proxy = start_proxy([svc])
    assert svc.state() == "missing"
    protocols = ["realtime", "openai-insecure-api-key.ek_secret"]
    with ws(proxy, svc, "/ws?intent=transcription", subprotocols=protocols,
            headers={"Authorization": "Bearer sk-x", "X-Forwarded-For": "203.0.113.9"}) as conn:
        hello = json.loads(conn.recv(timeout=10))
        assert svc.state() == "running"
        assert conn.subprotocol == "realtime"
        assert hello["path"] == "/ws?intent=transcription" and hello["protocols"] == protocols
        headers = {k.lower(): v for k, v in hello["headers"]}
        assert headers["host"] == f"{svc.host}:{proxy.port}" and headers["authorization"] == "Bearer sk-x"
        assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        conn.send("bonjour")
        assert conn.recv(timeout=10) == "bonjour"
        conn.send(b"\x00\x01" * 300_000)                       # 600 kB binary, over aiohttp's default frame size
        assert conn.recv(timeout=10) == b"\x00\x01" * 300_000
        assert proxy.health()["services"][svc.host]["websockets"] == 1
        assert proxy.metric(M + "open_websockets", host=svc.host) == 1
        # the service closes with its code and reason (a full server: try again later): the client gets both
        conn.send("close:1013:session_limit_reached")
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=10)
    assert (conn.close_code, conn.close_reason) == (1013, "session_limit_reached")
    wait_for(lambda: proxy.health()["services"][svc.host]["in_flight"] == 0, 10, what="the session's end")
    assert proxy.metric(M + "requests_total", host=svc.host, code=101) == 1
    assert proxy.metric(M + "open_websockets", host=svc.host) == 0


def test_open_session_outlives_the_idle_timeout(make_service, start_proxy):
    """A quiet session three idle timeouts long is not cut, nor its service stopped; once it ends the idle clock
    starts and the service stops."""
    svc = make_service(idle_timeout=2)
    proxy = start_proxy([svc])
    with ws(proxy, svc) as conn:
        conn.recv(timeout=10)
        time.sleep(7)
        assert proxy.health()["services"][svc.host]["in_flight"] == 1
        assert svc.state() == "running" and proxy.metric(M + "stops_total", host=svc.host) == 0
        conn.send("still here")
        assert conn.recv(timeout=10) == "still here"
    wait_for(lambda: proxy.metric(M + "stops_total", host=svc.host) == 1, 20, what="the idle stop after the session")
    assert svc.state() == "exited"


def test_client_hang_up_closes_the_service_side(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    with ws(proxy, svc) as conn:
        conn.recv(timeout=10)
        conn.socket.shutdown(socket.SHUT_RDWR)               # no close frame: the client just vanished
        wait_for(lambda: proxy.health()["services"][svc.host]["in_flight"] == 0, 10, what="the relay's end")
    # a new session works at once
    with ws(proxy, svc) as again:
        assert json.loads(again.recv(timeout=10))["path"] == "/ws"


def test_a_refused_upgrade_answers_its_status(make_service, start_proxy):
    svc = make_service()
    proxy = start_proxy([svc])
    with pytest.raises(InvalidStatus) as e:
        ws(proxy, svc, "/ws?refuse=403")
    assert e.value.response.status_code == 403
    assert b"refused the WebSocket" in e.value.response.body
