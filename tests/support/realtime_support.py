"""Live transcription sessions as a client drives them, with the openai SDK's own realtime client: recordings of
known utterances, streamed at real-time pace (or faster), and every server event with the time it arrived.
Shared by the tests (integration and end to end) and bench/realtime.py."""
from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

RATE = 24000   # the Realtime API's PCM16 rate


@dataclass
class Recording:
    """24 kHz PCM16 audio made of utterances with silence between them; `utterances`: (start s, end s, text)."""
    pcm: np.ndarray
    utterances: List[Tuple[float, float, str]]

    @property
    def text(self) -> str:
        return " ".join(u[2] for u in self.utterances)

    @property
    def seconds(self) -> float:
        return self.pcm.size / RATE

    def head(self, n: int, tail: float = 1.5) -> "Recording":
        """The first `n` utterances, ending in `tail` seconds of silence."""
        end = int(self.utterances[n - 1][1] * RATE)
        return Recording(np.concatenate([self.pcm[:end], np.zeros(int(tail * RATE), "<i2")]), self.utterances[:n])


def pcm24(path: Path) -> np.ndarray:
    """A recording as 24 kHz mono PCM16 (PyAV's resampler, as the services decode)."""
    from faster_whisper.audio import decode_audio
    audio = decode_audio(str(path), sampling_rate=RATE)
    return np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")


def _speech_bounds(pcm: np.ndarray) -> Tuple[int, int]:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 0.02 * 32768)
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, pcm.size)


def recording(parts: Sequence[Tuple[Path, str]], gap: float = 1.5, lead: float = 0.5, tail: float = 1.5) -> Recording:
    """The wav files one after the other, `gap` seconds of silence between them: the times of their speech
    (leading and trailing silence of each file left out) are the utterances'."""
    chunks, utterances, pos = [np.zeros(int(lead * RATE), "<i2")], [], int(lead * RATE)
    for i, (path, text) in enumerate(parts):
        pcm = pcm24(path)
        a, b = _speech_bounds(pcm)
        pcm = pcm[a:b]
        utterances.append((pos / RATE, (pos + pcm.size) / RATE, text))
        chunks.append(pcm)
        pos += pcm.size
        pad = int((gap if i < len(parts) - 1 else tail) * RATE)
        chunks.append(np.zeros(pad, "<i2"))
        pos += pad
    return Recording(np.concatenate(chunks), utterances)


def espeak_recording(folder: Path, sentences: Sequence[str], **kw) -> Recording:
    """Each sentence spoken by espeak-ng (en-us), as one utterance of a recording (`recording`'s keywords)."""
    import subprocess
    parts = []
    for i, text in enumerate(sentences):
        path = folder / f"sentence-{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        parts.append((path, text))
    return recording(parts, **kw)


@dataclass
class Item:
    id: str
    deltas: List[Tuple[float, str]] = field(default_factory=list)
    transcript: Optional[str] = None
    started_ms: Optional[int] = None       # audio_start_ms of speech_started
    stopped_ms: Optional[int] = None       # audio_end_ms of speech_stopped
    committed_at: Optional[float] = None   # seconds since the first append, when each event arrived
    completed_at: Optional[float] = None
    failed: Optional[dict] = None

    @property
    def delta_text(self) -> str:
        return "".join(d for _, d in self.deltas)


@dataclass
class Result:
    events: List[Tuple[float, dict]] = field(default_factory=list)
    items: Dict[str, Item] = field(default_factory=dict)
    order: List[str] = field(default_factory=list)       # item ids in commit order
    sent_seconds: float = 0.0                            # how long the sending took

    def of_type(self, kind: str) -> List[dict]:
        return [e for _, e in self.events if e["type"] == kind]

    @property
    def completed(self) -> List[Item]:
        return [self.items[i] for i in self.order if self.items[i].transcript is not None]

    @property
    def text(self) -> str:
        return " ".join(i.transcript for i in self.completed if i.transcript)


def server_vad(**over) -> dict:
    return {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500, **over}


def transcription_session(model: Optional[str] = None, language: Optional[str] = None, turn_detection="vad") -> dict:
    tr = {}
    if model:
        tr["model"] = model
    if language:
        tr["language"] = language
    td = server_vad() if turn_detection == "vad" else turn_detection
    return {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                                        "transcription": tr, "turn_detection": td}}}


async def stream(conn, pcm: np.ndarray, pace: float = 1.0, chunk_ms: int = 100) -> float:
    """Appends `pcm` in chunks of `chunk_ms`, `pace` times real time (0: as fast as the socket takes it);
    returns the time the first append went out (monotonic)."""
    step = RATE * chunk_ms // 1000
    t0 = time.monotonic()
    for i in range(0, pcm.size, step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step].tobytes()).decode())
        if pace:
            await asyncio.sleep(max(0.0, t0 + (i + step) / RATE / pace - time.monotonic()))
    return t0


async def run_session(conn, pcm: np.ndarray, *, items: Optional[int] = None, pace: float = 1.0,
                      chunk_ms: int = 100, timeout: float = 120.0, commit: bool = False) -> Result:
    """Streams `pcm` into an open session and records every server event until `items` items are completed
    (or failed), or without `items` until the audio is sent and every turn it started is completed (the
    recording must end in silence); `commit`: a manual commit after the audio (without turn detection)."""
    result = Result()
    t0: List[float] = []

    async def send():
        t0.append(time.monotonic())
        await stream(conn, pcm, pace, chunk_ms)
        if commit:
            await conn.input_audio_buffer.commit()
        result.sent_seconds = time.monotonic() - t0[0]

    def finished() -> bool:
        if items is not None:
            return done >= items
        return (sender.done() and bool(result.items)
                and all(i.transcript is not None or i.failed for i in result.items.values()))

    async def events():
        from websockets.exceptions import ConnectionClosed
        while not finished():
            try:
                yield await asyncio.wait_for(conn.recv(), 0.5)   # the SDK: cancelling recv() loses nothing
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed:
                return

    sender = asyncio.ensure_future(send())
    done = 0
    try:
        async with asyncio.timeout(timeout):
            async for ev in events():
                now = time.monotonic() - (t0[0] if t0 else time.monotonic())
                d = ev.model_dump(mode="json", exclude_unset=True)
                result.events.append((now, d))
                kind, item_id = d["type"], d.get("item_id")
                it = result.items.setdefault(item_id, Item(item_id)) if item_id else None
                if kind == "input_audio_buffer.speech_started":
                    it.started_ms = d["audio_start_ms"]
                elif kind == "input_audio_buffer.speech_stopped":
                    it.stopped_ms = d["audio_end_ms"]
                elif kind == "input_audio_buffer.committed":
                    it.committed_at = now
                    result.order.append(item_id)
                elif kind == "conversation.item.input_audio_transcription.delta":
                    it.deltas.append((now, d["delta"]))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    it.transcript, it.completed_at = d["transcript"], now
                    done += 1
                elif kind == "conversation.item.input_audio_transcription.failed":
                    it.failed = d["error"]
                    done += 1
    finally:
        if not sender.done():
            sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the socket may be gone already
            pass
    return result


def sdk_client(base_url: str, api_key: str, **kw):
    from openai import AsyncOpenAI
    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, **kw)


def connect(client, **kw):
    """`client.realtime.connect(...)` for a transcription session, as OpenAI documents it."""
    return client.realtime.connect(extra_query={"intent": "transcription"}, **kw)
