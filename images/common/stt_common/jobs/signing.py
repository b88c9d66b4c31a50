"""The webhook's signature (what the front sends, what a receiver checks), each caller's secret, and the callback
URL's check at submission.

`X-STT-Signature: t=<unix time>,v2=<hex>`: v2 is HMAC-SHA256 of `"<t>.<recipient URL>.<raw body>"` keyed with the
CALLER's webhook secret. The URL is signed too, so a signed delivery captured by one receiver cannot be replayed
to another; the secret is the caller's own, so no caller can sign for another. A caller's secret is derived from
the host's master secret (STT_WEBHOOK_SECRET) and the caller's identity, or set by the caller itself; a caller
reads it at GET /v1/jobs/webhook-secret (api.py)."""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Optional

from ..errors import bad_request
from ..outbound import AddressPolicy, OutboundError, check_address, parse_url, resolve

SIGNATURE_HEADER = "X-STT-Signature"
DELIVERY_HEADER = "X-STT-Webhook-Id"
SECRET_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]{32,256}")


def sign(secret: str, timestamp: int, url: str, body: bytes) -> str:
    """The webhook signature header's value for this recipient and body."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{url}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v2={mac}"


def verify(secret: str, header: str, url: str, body: bytes, tolerance_s: int = 300,
           now: Optional[float] = None) -> bool:
    """What a receiver does: the header names this URL and body, signed with its secret, at most
    `tolerance_s` ago (documented in images/README.md and docs/jobs.md)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, url, body), header)


def derived_secret(master: str, owner: str) -> str:
    """A caller's secret when it set none: its own, from the host's master secret (never stored)."""
    return "whsec_" + hmac.new(master.encode(), f"webhook-secret:{owner}".encode(), hashlib.sha256).hexdigest()


def caller_secret(conn, master: str, owner: str) -> tuple[str, str]:
    """(secret, "set" | "derived") for the caller `owner`."""
    from .keys import caller_secret_key

    stored = conn.get(caller_secret_key(owner)) if conn is not None else None
    if stored:
        return stored.decode(), "set"
    return derived_secret(master, owner), "derived"


def _refuse(message: str) -> Exception:
    return bad_request(f"callback_url: {message}.", param="callback_url", code="invalid_callback_url")


def check_callback_url(url: str, policy: AddressPolicy, resolver=None, resolve_timeout: float = 5.0) -> str:
    """At submission: a URL the delivery can use (outbound.parse_url's rules), whose host is not a refused address
    now. Blocking (DNS): call it from a worker thread, never from the event loop. The delivery checks again and
    pins what it checked: this check only spares the caller a job whose webhook could never be delivered."""
    try:
        target = parse_url(url)
        check_address(target, policy)
        if not target.literal:
            resolve(target, policy, resolver, timeout=resolve_timeout)
    except OutboundError as e:
        if e.reason == "timeout":   # slow DNS: the delivery will tell
            return url
        raise _refuse(e.message) from None
    return url
