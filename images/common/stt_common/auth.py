"""Optional API keys: `Authorization: Bearer <key>`; no keys configured = open."""
from __future__ import annotations

import hmac
from typing import Optional

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import unauthorized

_bearer = HTTPBearer(auto_error=False, description="One of the keys in STT_API_KEYS (none configured = open).")


def check_key(presented: Optional[str], keys: frozenset) -> bool:
    if not keys:
        return True
    if not presented:
        return False
    ok = False
    for k in keys:  # constant time against every key
        ok |= hmac.compare_digest(presented.encode(), k.encode())
    return ok


def require_api_key(settings):
    keys = settings.api_key_set

    async def dependency(creds: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> None:
        if not keys:
            return
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        if not check_key(creds.credentials, keys):
            raise unauthorized("Incorrect API key provided.")

    return dependency
