"""Header handling for the proxy: routing host, hop-by-hop removal, X-Forwarded-*."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from multidict import CIMultiDict

from .config_file import normalize_host

# RFC 9110 7.6.1 plus the usual non-standard ones. Transfer-Encoding and Content-Length are
# the framing of one connection: the body is re-framed on each side.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
    "TE", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade",
))
# additionally not forwarded upstream: the proxy answers `Expect: 100-continue` itself
REQUEST_ONLY_DROP = frozenset({"expect"})


def routing_host(host_header: Optional[str]) -> Optional[str]:
    """The configured-service key for a Host header: lowercase, port stripped.

    `Whisper.Example.COM:443` -> `whisper.example.com`; `[::1]:8890` -> `[::1]`."""
    if not host_header:
        return None
    value = host_header.strip()
    if value.startswith("["):
        end = value.find("]")
        host = value[: end + 1] if end != -1 else value
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() and port != "":
            host = value
    host = normalize_host(host)
    return host or None


def _connection_tokens(headers) -> set:
    tokens = set()
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def websocket_upgrade(method: str, headers) -> bool:
    """A WebSocket handshake (RFC 6455 4.1): GET with `Upgrade: websocket` and `Connection: upgrade`."""
    return (method == "GET" and headers.get("Upgrade", "").strip().lower() == "websocket"
            and "upgrade" in _connection_tokens(headers))


def strip_hop_by_hop(headers, extra_drop: Iterable[str] = ()) -> CIMultiDict:
    """A copy without hop-by-hop headers, including any named in `Connection`.
    Repeated headers (Set-Cookie...) keep every value, in order."""
    drop = set(HOP_BY_HOP) | _connection_tokens(headers) | {h.lower() for h in extra_drop}
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in drop:
            out.add(key, value)
    return out


def upstream_request_headers(headers, *, remote: Optional[str], scheme: str) -> CIMultiDict:
    """Headers sent upstream: the client's minus hop-by-hop, Host kept as the client sent it,
    X-Forwarded-For appended, X-Forwarded-Proto/-Host kept when a front proxy (nginx) set them."""
    out = strip_hop_by_hop(headers, REQUEST_ONLY_DROP)
    chain = [v.strip() for v in out.getall("X-Forwarded-For", ()) if v.strip()]
    if remote:
        chain.append(remote)
    out.popall("X-Forwarded-For", None)
    if chain:
        out["X-Forwarded-For"] = ", ".join(chain)
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = scheme
    if "X-Forwarded-Host" not in out and "Host" in out:
        out["X-Forwarded-Host"] = out["Host"]
    return out


def downstream_response_headers(headers) -> CIMultiDict:
    """Headers sent back to the client: upstream's minus hop-by-hop."""
    return strip_hop_by_hop(headers)


def parse_listen(value: str) -> Tuple[str, int]:
    """`127.0.0.1:8890`, `[::1]:8890`, `:8890` (all addresses) -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end == -1 or value[end + 1 : end + 2] != ":":
            raise ValueError(f"bad listen address {value!r}")
        host, port = value[1:end], value[end + 2 :]
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"bad listen address {value!r} (expected HOST:PORT)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in listen address {value!r}")
    return host or "0.0.0.0", int(port)
