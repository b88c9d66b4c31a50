"""Who calls: `Authorization: Bearer <key>` with one of STT_API_KEYS, or a basic-auth user that nginx vouches for.

Each caller has its own identity (`Caller.id`), under which its asynchronous jobs, quotas and webhook secret are
kept:
- an API key is a caller: the id is a hash of the key (two keys are two callers, even in one person's hands);
- a basic-auth user is a caller: nginx checks the user's password, then forwards the request with the PROXY key
  (STT_PROXY_KEY, a secret only nginx and the services hold, never given to a client) and the user's name in
  `X-STT-User`, which nginx always overwrites. The proxy key alone is refused: it is valid only with a user
  name, and a user name is believed only with the proxy key;
- without keys (STT_ALLOW_OPEN_ACCESS, local development) everyone is one caller, "anonymous".
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import unauthorized

USER_HEADER = "X-STT-User"
SAFE_USER = re.compile(r"[A-Za-z0-9._@-]{1,64}")   # what the deploy accepts as a basic-auth user name

_bearer = HTTPBearer(auto_error=False, description="One of the keys in STT_API_KEYS (none configured = open).")


@dataclass(frozen=True)
class Caller:
    id: str      # a hash: what jobs are kept under (never the key itself)
    kind: str    # "key", "user" or "anonymous"


ANONYMOUS = Caller("anonymous", "anonymous")


def caller_for_key(key: str) -> Caller:
    return Caller(hashlib.sha256(key.encode()).hexdigest()[:16], "key")


def caller_for_user(name: str) -> Caller:
    return Caller(hashlib.sha256(f"user:{name}".encode()).hexdigest()[:16], "user")


def check_key(presented: Optional[str], keys: frozenset) -> bool:
    if not keys:
        return True
    if not presented:
        return False
    ok = False
    for k in keys:  # constant time against every key
        ok |= hmac.compare_digest(presented.encode(), k.encode())
    return ok


def identify(presented: Optional[str], user: Optional[str], keys: frozenset, proxy_key: str) -> Caller:
    """The caller of a request with this bearer value and X-STT-User header, or 401."""
    if proxy_key and presented and hmac.compare_digest(presented.encode(), proxy_key.encode()):
        if not user or not SAFE_USER.fullmatch(user):
            raise unauthorized("Incorrect API key provided.")
        return caller_for_user(user)
    if not keys:
        return caller_for_key(presented) if presented else ANONYMOUS
    if not presented:
        raise unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    if not check_key(presented, keys):
        raise unauthorized("Incorrect API key provided.")
    return caller_for_key(presented)


def require_api_key(settings):
    keys = settings.api_key_set
    proxy_key = getattr(settings, "proxy_key", "") or ""

    async def dependency(request: Request,
                         creds: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> None:
        presented = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else None
        request.state.caller = identify(presented, request.headers.get(USER_HEADER), keys, proxy_key)

    return dependency


def caller_of(request: Request) -> Caller:
    """The caller the auth dependency found (routes behind it); outside them, from the bearer key alone."""
    caller = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    auth = request.headers.get("authorization", "")
    key = auth[7:] if auth[:7].lower() == "bearer " else ""
    return caller_for_key(key) if key else ANONYMOUS
