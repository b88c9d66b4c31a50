"""docker_autostart.headers: routing host, hop-by-hop removal, X-Forwarded-*, listen addresses."""

import pytest
from multidict import CIMultiDict

from docker_autostart.headers import (
    downstream_response_headers, parse_listen, routing_host, strip_hop_by_hop, upstream_request_headers,
    websocket_upgrade)


@pytest.mark.parametrize("header, host", [
    ("whisper.example.com", "whisper.example.com"),
    ("Whisper.Example.COM:443", "whisper.example.com"),
    ("whisper.example.com.", "whisper.example.com"),
    ("127.0.0.1:8890", "127.0.0.1"),
    ("[::1]:8890", "[::1]"),
    ("[::1]", "[::1]"),
    ("host:", "host"),
    ("", None),
    (None, None),
])
def test_routing_host(header, host):
    assert routing_host(header) == host


def test_hop_by_hop_and_connection_listed_headers_are_dropped():
    h = CIMultiDict([("Connection", "keep-alive, X-Private"), ("Connection", "Upgrade"), ("X-Private", "1"),
                     ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("TE", "trailers"),
                     ("Upgrade", "websocket"), ("Proxy-Authorization", "Basic x"), ("Trailer", "X"),
                     ("Content-Type", "audio/wav"), ("Content-Length", "10"), ("Authorization", "Bearer k")])
    out = strip_hop_by_hop(h)
    assert sorted(out.keys()) == ["Authorization", "Content-Length", "Content-Type"]


def test_repeated_headers_keep_every_value_in_order():
    h = CIMultiDict([("Set-Cookie", "a=1"), ("Connection", "close"), ("Set-Cookie", "b=2")])
    assert downstream_response_headers(h).getall("Set-Cookie") == ["a=1", "b=2"]


def test_upstream_headers_keep_host_and_add_forwarded():
    h = CIMultiDict([("Host", "Whisper.Example.com:443"), ("Expect", "100-continue"), ("Accept", "*/*")])
    out = upstream_request_headers(h, remote="10.0.0.5", scheme="http")
    assert out["Host"] == "Whisper.Example.com:443"
    assert out["X-Forwarded-For"] == "10.0.0.5"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "Whisper.Example.com:443"
    assert "Expect" not in out  # the proxy answered 100-continue itself
    assert out["Accept"] == "*/*"


def test_front_proxy_forwarded_headers_are_kept_and_for_is_appended():
    h = CIMultiDict([("Host", "w.example"), ("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "198.51.100.2"),
                     ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "public.example")])
    out = upstream_request_headers(h, remote="127.0.0.1", scheme="http")
    assert out.getall("X-Forwarded-For") == ["203.0.113.1, 198.51.100.2, 127.0.0.1"]
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "public.example"


def test_no_remote_and_no_host():
    out = upstream_request_headers(CIMultiDict(), remote=None, scheme="http")
    assert "X-Forwarded-For" not in out and "X-Forwarded-Host" not in out


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:8890", ("127.0.0.1", 8890)),
    ("[::1]:8890", ("::1", 8890)),
    (":8890", ("0.0.0.0", 8890)),
])
def test_parse_listen(value, expected):
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8890", "127.0.0.1:", "127.0.0.1:99999", "[::1]8890", "host:port"])
def test_parse_listen_refuses(value):
    with pytest.raises(ValueError):
        parse_listen(value)


def test_websocket_upgrade_needs_get_upgrade_and_the_connection_token():
    ok = CIMultiDict({"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"})
    assert websocket_upgrade("GET", ok)
    assert not websocket_upgrade("POST", ok)
    assert not websocket_upgrade("GET", CIMultiDict({"Upgrade": "websocket"}))            # no Connection: upgrade
    assert not websocket_upgrade("GET", CIMultiDict({"Upgrade": "h2c", "Connection": "Upgrade"}))
