"""Live transcription (`/v1/realtime`) with the openai SDK's own realtime client, against the faster-whisper
server run from source with tiny.en: turns found by the server VAD, deltas and completed transcripts in item order,
manual commits, protocol errors as Realtime `error` events, credentials (API key, ephemeral client secrets), and the
session limits. French with `base`: test_realtime_french.py."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest

from support.realtime_support import (RATE, connect, espeak_recording, recording, run_session, sdk_client, server_vad,
                              stream, transcription_session)
from support.transcript_wer import wer

from .conftest import start_server, stop_server

KEY = "sk-realtime-test"
SENTENCES = ("Today we are testing a live transcription server.",
             "The weather is sunny and the meeting starts at ten.",
             "Please send the report before Friday.")
MAX_WER = 0.25   # tiny.en on espeak-ng: the file route measures about the same


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("rt-speech")
    long = d / "long.wav"   # the three sentences as one turn (short pauses between them, under 500 ms)
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-g", "2", "-w", str(long), " ".join(SENTENCES)],
                   check=True)
    return {"rec": espeak_recording(d, SENTENCES), "long": long}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster-rt"), STT_API_KEYS=KEY)
    yield s
    stop_server(s)


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def health(server) -> dict:
    return httpx.get(server.url + "/health", timeout=5).json()


def test_sdk_session_transcribes_each_turn_in_order(server, speech):
    rec = speech["rec"]

    async def main():
        client = sdk_client(server.url + "/v1", KEY)
        async with connect(client) as conn:
            await conn.session.update(session=transcription_session())
            return await run_session(conn, rec.pcm, items=len(rec.utterances), pace=1.0)

    r = asyncio.run(main())
    kinds = [e["type"] for _, e in r.events]
    assert kinds[0] == "session.created" and kinds[1] == "session.updated", kinds[:3]
    assert r.events[1][1]["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert [e["item_id"] for e in r.of_type("input_audio_buffer.speech_started")] == r.order
    # one item per utterance, in commit order, each chained to the one before
    assert len(r.order) == len(rec.utterances) and len(r.completed) == len(rec.utterances)
    committed = r.of_type("input_audio_buffer.committed")
    assert [c.get("previous_item_id") for c in committed] == [None] + r.order[:-1]
    assert [e["item_id"] for e in r.of_type("conversation.item.input_audio_transcription.completed")] == r.order
    for item, (start, end, text) in zip(r.completed, rec.utterances):
        # VAD times against the recording's: the turn starts within 300 ms padding + 200 ms, ends after its silence
        assert start * 1000 - 550 <= item.started_ms <= start * 1000 + 200, (item.started_ms, start)
        assert end * 1000 + 300 <= item.stopped_ms <= end * 1000 + 1200, (item.stopped_ms, end)
        assert wer(text, item.transcript) <= MAX_WER, item.transcript
        # the deltas, joined, end as the completed transcript does (interim words may differ: `completed` is right)
        assert item.delta_text.split()[-2:] == item.transcript.split()[-2:], (item.delta_text, item.transcript)
        # events of one item in their protocol order
        assert item.committed_at <= item.completed_at
    usage = r.of_type("conversation.item.input_audio_transcription.completed")[0]["usage"]
    assert usage["type"] == "duration" and 2 < usage["seconds"] < 8
    assert wer(rec.text, r.text) <= MAX_WER, r.text


def test_deltas_arrive_while_the_speaker_talks(server, speech):
    """One long turn at real-time pace: interim decodes send deltas before the turn ends (how soon after the
    speech starts is measured in bench/realtime.py, not here)."""
    rec = recording([(speech["long"], " ".join(SENTENCES))])

    async def main():
        client = sdk_client(server.url + "/v1", KEY)
        async with connect(client) as conn:
            await conn.session.update(session=transcription_session())
            return await run_session(conn, rec.pcm, items=1, pace=1.0)

    r = asyncio.run(main())
    (item,) = r.completed
    early = [d for t, d in item.deltas if t < item.committed_at]
    assert early, item.deltas
    assert item.delta_text.split()[-2:] == item.transcript.split()[-2:], (item.delta_text, item.transcript)
    assert wer(rec.text, item.transcript) <= MAX_WER, item.transcript


def test_manual_commit_without_turn_detection(server, speech):
    rec = speech["rec"]
    one = rec.pcm[: int(rec.utterances[0][1] * RATE) + RATE // 2]

    async def main():
        client = sdk_client(server.url + "/v1", KEY)
        async with connect(client) as conn:
            await conn.session.update(session=transcription_session(turn_detection=None, language="en"))
            await conn.input_audio_buffer.commit()        # nothing appended yet: an error, the session goes on
            ev = await conn.recv()
            while ev.type != "error":
                ev = await conn.recv()
            empty = ev.error
            await stream(conn, one[: RATE // 2], pace=0)   # half a second of it, then cleared
            await conn.input_audio_buffer.clear()
            r = await run_session(conn, one, items=1, pace=0, commit=True)
            return empty, r

    empty, r = asyncio.run(main())
    assert empty.code == "input_audio_buffer_commit_empty" and "100ms" in empty.message
    assert r.of_type("input_audio_buffer.cleared")
    assert not r.of_type("input_audio_buffer.speech_started")      # no turn detection: no VAD events
    assert len(r.completed) == 1 and wer(SENTENCES[0], r.completed[0].transcript) <= MAX_WER


def _raw(server, *, subprotocols=None, headers=None):
    from websockets.asyncio.client import connect as ws_connect
    return ws_connect(ws_url(server), subprotocols=subprotocols, additional_headers=headers or {},
                      max_size=None, compression=None)


async def _next(ws, kind: str, timeout: float = 30) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            if ev["type"] == kind:
                return ev


def test_protocol_errors_are_realtime_error_events(server, speech):
    """Bad events, bad audio and events out of place each get an `error` naming the client's event_id; the
    session stays open and still transcribes."""
    rec = speech["rec"]
    one = rec.pcm[: int(rec.utterances[0][1] * RATE) + RATE // 2]
    bad = [
        ("not json", "invalid_json", None),
        (json.dumps([1, 2]), "invalid_event", None),
        (json.dumps({"event_id": "e1", "type": "no.such.event"}), "invalid_event", "type"),
        (json.dumps({"event_id": "e2", "type": "response.create"}), "unsupported_event", "type"),
        (json.dumps({"event_id": "e3", "type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_value", "audio"),
        (json.dumps({"event_id": "e4", "type": "input_audio_buffer.append",
                     "audio": base64.b64encode(b"\x01\x02\x03").decode()}), "invalid_value", "audio"),
        (json.dumps({"event_id": "e5", "type": "session.update", "session": {"type": "realtime"}}),
         "unsupported_session_type", "session.type"),
        (json.dumps({"event_id": "e6", "type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {"model": "no-such-model"}}}}}),
         "model_not_found", "session.audio.input.transcription.model"),
        (json.dumps({"event_id": "e7", "type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {"language": "fr"}}}}}),
         "unsupported_language", "session.audio.input.transcription.language"),   # tiny.en is English-only
        (json.dumps({"event_id": "e8", "type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty", None),
        (b"\x00\x01binary", "invalid_event", None),
    ]

    async def main():
        async with _raw(server, headers={"Authorization": f"Bearer {KEY}"}) as ws:
            assert (await _next(ws, "session.created"))["session"]["type"] == "transcription"
            errors = []
            for message, _, _ in bad:
                await ws.send(message)
                errors.append((await _next(ws, "error"))["error"])
            await ws.send(json.dumps({"type": "session.update", "session": transcription_session(turn_detection=None)}))
            await _next(ws, "session.updated")
            step = RATE // 10
            for i in range(0, one.size, step):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(one[i:i + step].tobytes()).decode()}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            done = await _next(ws, "conversation.item.input_audio_transcription.completed", 60)
            return errors, done

    errors, done = asyncio.run(main())
    for (message, code, param), err in zip(bad, errors):
        assert (err["code"], err["param"]) == (code, param), (message, err)
        assert err["type"] == "invalid_request_error" and err["message"]
        client_id = json.loads(message).get("event_id") if isinstance(message, str) and message.startswith("{") else None
        assert err["event_id"] == client_id
    assert wer(SENTENCES[0], done["transcript"]) <= MAX_WER


def test_beta_dialect_of_older_clients(server):
    """`transcription_session.update` (the beta shape) is answered in kind, as an `OpenAI-Beta: realtime=v1` client
    expects."""
    async def main():
        async with _raw(server, headers={"Authorization": f"Bearer {KEY}", "OpenAI-Beta": "realtime=v1"}) as ws:
            created = await _next(ws, "transcription_session.created")
            await ws.send(json.dumps({"type": "transcription_session.update", "session": {
                "input_audio_format": "g711_ulaw", "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": None}}))
            return created, await _next(ws, "transcription_session.updated")

    created, updated = asyncio.run(main())
    assert created["session"]["input_audio_format"] == "pcm16"
    session = updated["session"]
    assert session["input_audio_format"] == "g711_ulaw" and session["turn_detection"] is None
    assert session["input_audio_transcription"] == {"model": "whisper-1", "language": "en", "prompt": ""}


def test_credentials_api_key_and_single_use_client_secret(server):
    async def main():
        out = {}
        # no credentials, a wrong key: an error event, then close 1008 (no reconnect)
        for name, kw in (("none", {}), ("wrong", {"headers": {"Authorization": "Bearer sk-wrong"}}),
                         ("wrong-protocol", {"subprotocols": ["realtime", "openai-insecure-api-key.ek_forged"]})):
            async with _raw(server, **kw) as ws:
                err = await _next(ws, "error")
                await ws.wait_closed()
                out[name] = (err["error"]["code"], ws.close_code)
        # a browser's way: a client secret minted with the API key (the SDK's client_secrets.create), presented
        # as a subprotocol; the session starts with the secret's configuration
        client = sdk_client(server.url + "/v1", KEY)
        secret = await client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 30},
            session=transcription_session(language="en", turn_detection=server_vad(silence_duration_ms=700)))
        out["secret"] = secret
        protocols = ["realtime", f"openai-insecure-api-key.{secret.value}"]
        async with _raw(server, subprotocols=protocols) as ws:
            out["subprotocol"] = ws.subprotocol
            out["created"] = await _next(ws, "session.created")
        async with _raw(server, subprotocols=protocols) as ws:   # used up
            out["again"] = ((await _next(ws, "error"))["error"]["code"], (await ws.wait_closed()) or ws.close_code)
        # the beta route gives one too
        r = httpx.post(server.url + "/v1/realtime/transcription_sessions", headers={"Authorization": f"Bearer {KEY}"},
                       json={"input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"}})
        out["beta"] = r
        r = httpx.post(server.url + "/v1/realtime/client_secrets", json={})
        out["unauthenticated"] = r
        r = httpx.post(server.url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {KEY}"},
                       json={"expires_after": {"seconds": 3600}})
        out["too_long"] = r
        return out

    out = asyncio.run(main())
    assert out["none"] == ("invalid_api_key", 1008) and out["wrong"] == ("invalid_api_key", 1008)
    assert out["wrong-protocol"] == ("invalid_api_key", 1008)
    secret = out["secret"]
    assert secret.value.startswith("ek_") and secret.expires_at - time.time() <= 31
    assert secret.session.type == "transcription"
    assert out["subprotocol"] == "realtime"
    session = out["created"]["session"]["audio"]["input"]
    assert session["transcription"]["language"] == "en" and session["turn_detection"]["silence_duration_ms"] == 700
    assert out["again"] == ("invalid_api_key", 1008)
    beta = out["beta"].json()
    assert out["beta"].status_code == 200 and beta["client_secret"]["value"].startswith("ek_")
    assert beta["input_audio_format"] == "pcm16"
    assert out["unauthenticated"].status_code == 401
    assert out["too_long"].status_code == 400 and out["too_long"].json()["error"]["param"] == "expires_after.seconds"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster-rt-limits"), STT_API_KEYS=KEY, STT_REALTIME_MAX_SESSIONS=1,
                     STT_REALTIME_MAX_SESSION_SECONDS=12, STT_REALTIME_IDLE_TIMEOUT=3,
                     STT_REALTIME_MAX_BUFFER_SECONDS=5, STT_REALTIME_MAX_BACKLOG_SECONDS=1)
    yield s
    stop_server(s)


def test_session_cap_says_full_and_a_hang_up_frees_the_place(limited):
    async def main():
        headers = {"Authorization": f"Bearer {KEY}"}
        async with _raw(limited, headers=headers) as first:
            await _next(first, "session.created")
            assert health(limited)["realtime_sessions"] == 1
            async with _raw(limited, headers=headers) as second:
                err = (await _next(second, "error"))["error"]
                await second.wait_closed()
                full = (err["code"], err["type"], second.close_code)
            # a hang-up mid-stream (no close frame): the place is free at once
            await first.send(json.dumps({"type": "input_audio_buffer.append",
                                         "audio": base64.b64encode(np.zeros(RATE, "<i2").tobytes()).decode()}))
            first.transport.abort()
        t0 = time.monotonic()
        while health(limited)["realtime_sessions"] and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.05)
        freed = time.monotonic() - t0
        async with _raw(limited, headers=headers) as third:
            created = await _next(third, "session.created")
        return full, freed, created

    full, freed, created = asyncio.run(main())
    assert full == ("session_limit_reached", "server_error", 1013)
    assert freed < 2, freed
    assert created["session"]["type"] == "transcription"


def test_idle_and_maximum_length_close_the_session(limited):
    async def main():
        headers = {"Authorization": f"Bearer {KEY}"}
        async with _raw(limited, headers=headers) as ws:      # silence only: idle after 3 s
            await _next(ws, "session.created")
            t0 = time.monotonic()
            silence = base64.b64encode(np.zeros(RATE // 10, "<i2").tobytes()).decode()

            async def keep_sending():
                while True:
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
                    await asyncio.sleep(0.1)

            sender = asyncio.ensure_future(keep_sending())
            idle = (await _next(ws, "error", 10))["error"]["code"]
            sender.cancel()
            await ws.wait_closed()
            idle_after, idle_code = time.monotonic() - t0, ws.close_code
        async with _raw(limited, headers=headers) as ws:      # events all along: the 12 s limit still ends it
            await _next(ws, "session.created")
            t0 = time.monotonic()

            async def keep_updating():
                while True:
                    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
                    await asyncio.sleep(0.5)

            sender = asyncio.ensure_future(keep_updating())
            expired = (await _next(ws, "error", 20))["error"]["code"]
            sender.cancel()
            return idle, idle_after, idle_code, expired, time.monotonic() - t0

    idle, idle_after, idle_code, expired, expired_after = asyncio.run(main())
    assert idle == "session_idle_timeout" and 2.5 < idle_after < 6 and idle_code == 1000
    assert expired == "session_expired" and 11.5 < expired_after < 15


def test_buffer_bound_and_backpressure(limited, speech):
    """Without turn detection the buffer refuses audio past its bound (and keeps what it has); a client sending
    far faster than the server transcribes is not read until the backlog shrinks: the second item is committed
    only after the first one is transcribed."""
    pcm = speech["rec"].pcm
    item = pcm[int(speech["rec"].utterances[0][0] * RATE) - RATE // 4:][: 3 * RATE // 2]   # over the 1 s backlog

    async def main():
        client = sdk_client(limited.url + "/v1", KEY)
        async with connect(client) as conn:
            await conn.session.update(session=transcription_session(turn_detection=None))
            await stream(conn, np.zeros(6 * RATE, "<i2"), pace=0, chunk_ms=1000)   # 6 s > the 5 s buffer
            errors = []
            async for ev in conn:
                if ev.type == "error":
                    errors.append(ev.error.code)
                    break
            await conn.input_audio_buffer.clear()
            for _ in range(2):
                await stream(conn, item, pace=0)
                await conn.input_audio_buffer.commit()
            r = await run_session(conn, np.zeros(0, "<i2"), items=2, pace=0, timeout=60)
            return errors, r

    errors, r = asyncio.run(main())
    assert errors == ["input_audio_buffer_full"]
    committed = [t for t, e in r.events if e["type"] == "input_audio_buffer.committed"]
    completed = [t for t, e in r.events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(committed) == 2 and len(completed) == 2, r.events
    assert committed[1] >= completed[0], (committed, completed)
