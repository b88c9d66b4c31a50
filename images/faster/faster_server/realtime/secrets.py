"""Ephemeral client secrets: what a browser presents instead of an API key it must never hold.

A server (or the /live page, through nginx's own authentication) asks for one with an API key; the browser opens
one session with it, in the WebSocket subprotocol `openai-insecure-api-key.<secret>` (a browser cannot set an
Authorization header on a WebSocket). A secret is good for one session, within its short life; only its hash is
kept, in this process's memory (a restarted service forgets them all: its clients mint new ones)."""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Dict, Optional, Tuple

from stt_common import APIError

from .config import SessionConfig

PREFIX = "ek_"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ClientSecrets:
    def __init__(self, max_ttl: int, max_count: int):
        self.max_ttl, self.max_count = max_ttl, max_count
        self._store: Dict[str, Tuple[float, SessionConfig]] = {}

    def _prune(self) -> None:
        now = time.monotonic()
        for k in [k for k, (deadline, _) in self._store.items() if deadline <= now]:
            del self._store[k]

    def mint(self, config: SessionConfig, ttl: Optional[int] = None) -> Tuple[str, int]:
        """A new secret for one session with `config`, and when it expires (Unix time)."""
        ttl = self.max_ttl if ttl is None else ttl
        if not 10 <= ttl <= self.max_ttl:
            raise APIError(400, f"expires_after.seconds must be from 10 to {self.max_ttl} on this server "
                                f"(STT_REALTIME_CLIENT_SECRET_TTL).", param="expires_after.seconds",
                           code="invalid_value")
        self._prune()
        if len(self._store) >= self.max_count:
            raise APIError(429, f"{len(self._store)} client secrets are waiting to be used; retry once some expire.",
                           code="too_many_client_secrets", headers={"Retry-After": "10"})
        value = PREFIX + secrets.token_urlsafe(32)
        self._store[_digest(value)] = (time.monotonic() + ttl, config)
        return value, int(time.time() + ttl)

    def redeem(self, value: str) -> Optional[SessionConfig]:
        """The config of a valid unused secret, which is used up; None for anything else."""
        if not value.startswith(PREFIX):
            return None
        entry = self._store.pop(_digest(value), None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def __len__(self) -> int:
        self._prune()
        return len(self._store)
