"""The webhook's signature (what the front's worker sends, what a receiver checks) and the callback URL check."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from typing import Optional
from urllib.parse import urlsplit

from ..errors import bad_request

SIGNATURE_HEADER = "X-STT-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature: HMAC-SHA256 of `<timestamp>.<body>` with the shared secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300, now: Optional[float] = None) -> bool:
    """Check a webhook's signature header (what a receiver does; documented in images/README.md)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


def check_callback_url(url: str, allow_private: bool) -> str:
    """http(s) only; by default never a loopback, private or link-local address (no requests forged
    into the host's own services)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("callback_url must be an http:// or https:// URL.", param="callback_url",
                          code="invalid_callback_url")
    if len(url) > 2048:
        raise bad_request("callback_url is too long.", param="callback_url", code="invalid_callback_url")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError:
            raise bad_request(f"callback_url: cannot resolve '{parts.hostname}'.", param="callback_url",
                              code="invalid_callback_url") from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
                raise bad_request("callback_url points to a private or local address.", param="callback_url",
                                  code="invalid_callback_url")
    return url
