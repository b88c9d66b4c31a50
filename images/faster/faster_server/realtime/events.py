"""Server events of a Realtime transcription session, and its errors, as OpenAI's Realtime API shapes them."""
from __future__ import annotations

import json
import secrets
from typing import Any, Optional


def new_id(prefix: str) -> str:
    """OpenAI-style ids: `event_...`, `item_...`, `sess_...`."""
    return f"{prefix}_{secrets.token_hex(10)}"


def event(type_: str, **fields: Any) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


def dumps(ev: dict) -> str:
    return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))


class ProtocolError(Exception):
    """A client event the session cannot apply: answered with an `error` event, the session stays open unless
    `close` names a close code (then the socket closes after the event)."""

    def __init__(self, message: str, *, code: str, param: Optional[str] = None,
                 type: str = "invalid_request_error", close: Optional[int] = None):
        super().__init__(message)
        self.message, self.code, self.param, self.type, self.close = message, code, param, type, close

    def event(self, client_event_id: Optional[str] = None) -> dict:
        return error_event(self.message, code=self.code, param=self.param, type=self.type,
                           client_event_id=client_event_id)


def error_event(message: str, *, code: Optional[str], param: Optional[str] = None,
                type: str = "invalid_request_error", client_event_id: Optional[str] = None) -> dict:
    return event("error", error={"type": type, "code": code, "message": message, "param": param,
                                 "event_id": client_event_id})


# close codes (RFC 6455): the openai SDK reconnects (when asked to) only after 1001, 1011, 1012, 1013 and the like
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008        # refused: bad credentials
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011         # the server failed
CLOSE_TRY_LATER = 1013     # full: retry later


def item_added(item_id: str, previous_item_id: Optional[str]) -> dict:
    return event("conversation.item.added", previous_item_id=previous_item_id,
                 item={"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                       "status": "completed", "content": [{"type": "input_audio", "transcript": None}]})


def item_done(item_id: str, previous_item_id: Optional[str], transcript: Optional[str]) -> dict:
    return event("conversation.item.done", previous_item_id=previous_item_id,
                 item={"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                       "status": "completed", "content": [{"type": "input_audio", "transcript": transcript}]})


def transcription_delta(item_id: str, delta: str) -> dict:
    return event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=delta)


def transcription_completed(item_id: str, transcript: str, seconds: float) -> dict:
    return event("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                 transcript=transcript, usage={"type": "duration", "seconds": round(seconds, 3)})


def transcription_failed(item_id: str, message: str, code: Optional[str], type: str = "server_error") -> dict:
    return event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                 error={"type": type, "code": code, "message": message, "param": None})
