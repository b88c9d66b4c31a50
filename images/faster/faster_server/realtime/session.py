"""One Realtime transcription session: its input buffer, its turns, and the transcription of its items in order.

The receiving side (the WebSocket reader) applies client events at once: audio goes through the decoder and the
VAD, a turn that ends (or a commit) becomes an item in a queue. One worker task per session transcribes the items
of that queue in commit order (so `completed` events come in `item_id` order), and between them looks at the turn
in progress: interim decodes for its `delta` events while an inference slot is free, and once the speaker pauses a
speculative final decode, so that the `completed` event follows the end of the turn by little more than the
silence that ends it."""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Deque, Optional

import numpy as np

from stt_common import APIError, StopHandle, JobStopped, SAMPLE_RATE, check_language, model_languages, public_name

from ..engine import Options
from . import decode, events
from .audio import AudioInput
from .config import SessionConfig, apply_beta, apply_ga
from .events import ProtocolError
from .vad import FRAME, SileroStream, TurnDetector

log = logging.getLogger("faster_server.realtime")

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10     # OpenAI refuses to commit less than 100 ms
INTERIM_MIN_SPEECH = int(0.3 * SAMPLE_RATE)  # a turn's first interim decode once it holds this much speech
SPECULATE_FRAMES = 6                        # ~200 ms of silence in a turn: decode it as if it had ended
UNSUPPORTED = ("conversation.", "response.", "output_audio_buffer.")
# OpenAI's transcription model names: here, the server's default model
OPENAI_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-latest",
                 "gpt-4o-mini-transcribe-2025-12-15", "gpt-realtime-whisper", "gpt-transcribe", "gpt-live-transcribe")


class Buffer:
    """The uncommitted audio: samples [start, end) of the session's 16 kHz timeline, in chunks."""

    def __init__(self, start: int = 0):
        self.chunks: Deque[np.ndarray] = collections.deque()
        self.start = self.end = start

    def append(self, audio: np.ndarray) -> None:
        if audio.size:
            self.chunks.append(audio)
            self.end += audio.size

    def take(self, upto: int) -> np.ndarray:
        """Samples [start, upto) as one array, removed from the buffer."""
        out = self.peek(self.start, upto)
        self.drop_before(upto)
        return out

    def peek(self, a: int, b: int) -> np.ndarray:
        parts, pos = [], self.start
        for c in self.chunks:
            lo, hi = max(a, pos), min(b, pos + c.size)
            if lo < hi:
                parts.append(c[lo - pos:hi - pos])
            pos += c.size
            if pos >= b:
                break
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def drop_before(self, pos: int) -> None:
        pos = min(pos, self.end)
        while self.chunks and self.start + self.chunks[0].size <= pos:
            self.start += self.chunks.popleft().size
        if self.chunks and self.start < pos:
            self.chunks[0] = self.chunks[0][pos - self.start:]
        self.start = max(self.start, pos)

    def clear(self) -> None:
        self.chunks.clear()
        self.start = self.end


@dataclass
class Turn:
    """An item in the making (the buffer's speech) or committed, waiting for its transcription."""
    id: str
    start: int                           # its first sample, on the session's timeline (prefix padding included)
    speech: int = 0                      # the first sample of its speech
    deltas: decode.Deltas = field(default_factory=decode.Deltas)
    audio: Optional[np.ndarray] = None   # set at the commit
    previous_id: Optional[str] = None
    last_speech: int = 0                 # the sample after its last speech frame
    last_speech_at: float = 0.0          # when that frame arrived (monotonic): the end of the utterance
    interim_at: int = 0                  # the buffer's end at its last interim decode
    spec: Optional[tuple] = None         # (samples covered, decode.Result): a final decode made during a pause
    context: Optional[np.ndarray] = None  # set at the commit: the audio before it its final decode may hear
    context_start: int = 0               # the first sample of that audio


class Session:
    """Runs one WebSocket session. `send(event)` writes one server event; `hub` holds what sessions share (the
    settings, the model cache and names, the inference executor, the metrics)."""

    def __init__(self, hub, send: Callable[[dict], Awaitable[None]], config: SessionConfig, *,
                 beta: bool = False):
        self.hub, self._send, self.config, self.beta = hub, send, config, beta
        s = hub.settings
        self.settings = s
        self.final_settings = s if not s.realtime_beam_size else s.model_copy(update={"beam_size": s.realtime_beam_size})
        self.id = events.new_id("sess")
        self.started = time.monotonic()
        self.expires_at = int(time.time() + s.realtime_max_session_seconds)
        self.last_activity = self.started
        self.audio_in = AudioInput(config.format, config.input_rate)
        self.vad = SileroStream()
        self.turns = TurnDetector()
        self._configure_turns()
        self.buffer = Buffer()
        self.recent = Buffer()                     # all audio of the last seconds: the context of the next turns
        self.context_samples = int(s.realtime_context_seconds * SAMPLE_RATE)
        self.recent_samples = self.context_samples + int(s.realtime_max_buffer_seconds * SAMPLE_RATE)
        # the transcribed turns (first sample, transcript; None: failed) that a later turn's decode may hear
        # before it, and the first sample that may be heard (a clear of the buffer moves it past what it dropped)
        self.history: Deque[tuple[int, Optional[str]]] = collections.deque()
        self.context_floor = 0
        self.turn: Optional[Turn] = None          # the buffer's turn in progress (has speech)
        self.queue: Deque[Turn] = collections.deque()
        self.backlog = 0                           # samples committed, not yet transcribed
        self.last_item_id: Optional[str] = None
        self.model = None
        self.model_key: Optional[str] = None
        self.model_name = ""
        self._model_use = None
        self._wake = asyncio.Event()
        self._backlog_ok = asyncio.Event()
        self._backlog_ok.set()
        self._job: Optional[StopHandle] = None
        self._interim_rest = 0.0                   # no interim decode before this time (monotonic)
        self.closed = False

    # ------------------------------------------------------------------ setup
    def _configure_turns(self) -> None:
        td = self.config.turn_detection
        if td is not None:
            self.turns.configure(td.threshold, td.silence_duration_ms)
        else:
            self.turns.configure(0.5, 500)

    async def use_model(self, name: Optional[str], language: Optional[str], param: str) -> None:
        """Load (or find loaded) the model `name` and check `language` against it; keeps it in use (never
        unloaded under the session) until another replaces it or the session ends."""
        hub = self.hub
        try:
            key = hub.names.resolve(None if name in OPENAI_MODELS else name)
            if key != self.model_key:
                use = hub.cache.use(key)
                model = await use.__aenter__()
            else:
                use, model = None, self.model
            try:
                check_language(language, model_languages(model), f"'{public_name(name or hub.names.default_id)}'")
            except APIError:
                if use is not None:
                    await use.__aexit__(None, None, None)
                raise
        except APIError as e:
            raise ProtocolError(e.message, code=e.code or "invalid_value",
                                param=f"{param}.language" if e.param == "language" else f"{param}.model",
                                type=e.type) from None
        if use is not None:
            await self.release_model()
            self._model_use, self.model_key = use, key
            self.model = decode.short_window(model, self.settings.realtime_window_padding)
        self.model_name = name or public_name(hub.names.default_id)

    async def release_model(self) -> None:
        if self._model_use is not None:
            use, self._model_use = self._model_use, None
            await use.__aexit__(None, None, None)

    def session_object(self) -> dict:
        shape = self.config.to_beta if self.beta else self.config.to_ga
        return shape(self.id, self.model_name, self.expires_at)

    async def send(self, ev: dict) -> None:
        if not self.closed:
            await self._send(ev)

    async def created(self) -> None:
        await self.send(events.event("transcription_session.created" if self.beta else "session.created",
                                     session=self.session_object()))

    # ------------------------------------------------------------------ client events
    async def handle(self, ev: dict) -> None:
        """Apply one client event (a parsed JSON object); ProtocolError for the caller to answer."""
        kind = ev.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("Every client event needs a string 'type'.", code="invalid_event", param="type")
        if kind != "input_audio_buffer.append" or self.config.turn_detection is None:
            self.last_activity = time.monotonic()
        if kind == "input_audio_buffer.append":
            await self.append(ev.get("audio"))
        elif kind in ("session.update", "transcription_session.update"):
            await self.update(ev.get("session"), beta=(kind == "transcription_session.update"))
        elif kind == "input_audio_buffer.commit":
            await self.commit_buffer()
        elif kind == "input_audio_buffer.clear":
            self.clear()
            await self.send(events.event("input_audio_buffer.cleared"))
        elif kind.startswith(UNSUPPORTED) or kind == "session.close":
            raise ProtocolError(f"'{kind}' is not available in a transcription session: send audio with "
                                f"input_audio_buffer.append (and commit it without turn detection).",
                                code="unsupported_event", param="type")
        else:
            raise ProtocolError(f"Unknown event type '{kind[:64]}'.", code="invalid_event", param="type")

    async def update(self, session, beta: bool) -> None:
        new = (apply_beta if beta else apply_ga)(self.config, session)
        param = "session.input_audio_transcription" if beta else "session.audio.input.transcription"
        if (new.model, new.language) != (self.config.model, self.config.language) or self.model is None:
            await self.use_model(new.model, new.language, param)
        old, self.config, self.beta = self.config, new, beta
        if (new.format, new.rate) != (old.format, old.rate):
            self.audio_in = AudioInput(new.format, new.input_rate)
        if new.turn_detection != old.turn_detection:
            self._configure_turns()
            if (new.turn_detection is None) != (old.turn_detection is None):   # VAD on or off: a new turn
                self.turns.reset()
                self.turn = None
        await self.send(events.event("transcription_session.updated" if beta else "session.updated",
                                     session=self.session_object()))

    async def append(self, b64) -> None:
        audio = self.audio_in.decode(b64)
        limit = int(self.settings.realtime_max_buffer_seconds * SAMPLE_RATE)
        if self.config.turn_detection is None and self.buffer.end - self.buffer.start + audio.size > limit:
            raise ProtocolError(
                f"The input audio buffer would hold more than {self.settings.realtime_max_buffer_seconds:g} s: "
                f"commit it (input_audio_buffer.commit) before appending more. This append was not added.",
                code="input_audio_buffer_full", param="audio")
        if not audio.size:
            return
        self.buffer.append(audio)
        self.recent.append(audio)
        self.recent.drop_before(self.recent.end - self.recent_samples)
        now = time.monotonic()
        for ev in self.turns.process(self.vad.feed(audio)):
            if ev.kind == "start":
                await self._speech_started(ev.frame)
            elif self.config.turn_detection is not None:
                await self._speech_stopped(ev.frame)
        silence, last = self.turns.trailing_silence()
        if last is not None:
            if self.turn is None:   # no turn detection: the buffer's first speech makes its turn
                self.turn = Turn(events.new_id("item"), self.buffer.start, speech=last * FRAME)
            if self.turn.last_speech != (last + 1) * FRAME:
                self.turn.last_speech, self.turn.last_speech_at = (last + 1) * FRAME, now
            if self.config.turn_detection is not None:
                self.last_activity = now
        if self.config.turn_detection is not None:
            if self.turn is None:   # keep only what may become a turn's prefix padding
                pad = self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000
                self.buffer.drop_before(self.buffer.end - pad)
            elif self.buffer.end - self.turn.start >= limit:   # a turn as long as the buffer may hold: commit it
                await self._speech_stopped(None)
                self.turns.reset()
        self._wake.set()

    async def _speech_started(self, frame: int) -> None:
        if self.config.turn_detection is None:
            return
        td = self.config.turn_detection
        start = max(self.buffer.start, frame * FRAME - td.prefix_padding_ms * SAMPLE_RATE // 1000)
        self.turn = Turn(events.new_id("item"), start, speech=frame * FRAME)
        self.buffer.drop_before(start)
        await self.send(events.event("input_audio_buffer.speech_started", item_id=self.turn.id,
                                     audio_start_ms=start * 1000 // SAMPLE_RATE))

    async def _speech_stopped(self, frame: Optional[int]) -> None:
        turn = self.turn
        if turn is None:
            return
        end = self.buffer.end if frame is None else min(self.buffer.end, (frame + 1) * FRAME)
        await self.send(events.event("input_audio_buffer.speech_stopped", item_id=turn.id,
                                     audio_end_ms=end * 1000 // SAMPLE_RATE))
        await self._commit(turn, end)

    async def commit_buffer(self) -> None:
        if self.buffer.end - self.buffer.start < MIN_COMMIT_SAMPLES:
            ms = (self.buffer.end - self.buffer.start) * 1000 // SAMPLE_RATE
            raise ProtocolError(f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                                f"audio, but buffer only has {ms}ms of audio.",
                                code="input_audio_buffer_commit_empty", param=None)
        turn = self.turn or Turn(events.new_id("item"), self.buffer.start)
        self.turns.reset()
        await self._commit(turn, self.buffer.end)

    def _context(self, turn: Turn, end: int) -> tuple[Optional[np.ndarray], int]:
        """(the audio before `turn` (ending at `end`) that its decode may hear, its first sample): what fills the
        decoded audio up to STT_REALTIME_CONTEXT_SECONDS; which earlier turns of it are heard is decided once their
        transcripts are known (`_prefixed`)."""
        start = max(self.recent.start, self.context_floor, turn.start - (self.context_samples - (end - turn.start)))
        if turn.start <= start:
            return None, 0
        return self.recent.peek(start, turn.start), start

    def _prefixed(self, context: Optional[np.ndarray], start: int, turn: Turn) -> tuple[Optional[np.ndarray], str]:
        """(the audio of the earlier turns the decode of `turn` hears, their transcripts): whole turns from
        `context` (which begins at sample `start`), the latest ones back to the first that fits, none across a
        failed one."""
        first = None
        for t_start, text in reversed(self.history):
            if t_start >= turn.start:
                continue
            if t_start < start or text is None:
                break
            first = t_start
        if context is None or first is None:
            return None, ""
        texts = [text for t_start, text in self.history if first <= t_start < turn.start]
        return context[first - start:], " ".join(t for t in texts if t)

    def _remember(self, turn: Turn, text: Optional[str]) -> None:
        self.history.append((turn.start, text))
        while self.history and self.history[0][0] < turn.start - self.context_samples:
            self.history.popleft()

    async def _commit(self, turn: Turn, end: int) -> None:
        turn.context, turn.context_start = self._context(turn, end)
        turn.audio = self.buffer.take(end)
        turn.previous_id, self.last_item_id = self.last_item_id, turn.id
        if not turn.last_speech_at:
            turn.last_speech_at = time.monotonic()
        self.turn = None
        self.backlog += turn.audio.size
        if self.backlog > self.settings.realtime_max_backlog_seconds * SAMPLE_RATE:
            self._backlog_ok.clear()
        self.queue.append(turn)
        self._wake.set()
        await self.send(events.event("input_audio_buffer.committed", item_id=turn.id,
                                     previous_item_id=turn.previous_id))
        await self.send(events.item_added(turn.id, turn.previous_id))

    def clear(self) -> None:
        self.context_floor = self.buffer.end   # what was cleared is never heard as a later turn's context
        self.buffer.clear()
        self.turns.reset()
        self.turn = None

    def idle_since(self) -> float:
        """Since when the session has had nothing to do (no speech, no event, nothing left to transcribe)."""
        if self.queue or self.backlog:
            self.last_activity = time.monotonic()
        return self.last_activity

    async def wait_backlog(self) -> None:
        """Returns once the committed audio waiting for transcription is within its bound (backpressure)."""
        await self._backlog_ok.wait()

    # ------------------------------------------------------------------ transcription
    def _options(self) -> Options:
        # no earlier transcript as the prompt: measured, it made French turns worse where audio context helps
        return Options(language=self.config.language, prompt=self.config.prompt or None,
                       hotwords=" ".join(self.config.keywords) or None)

    async def _run(self, what: str, turn: Turn, fn):
        """`fn(job)` in an inference thread, waiting for a slot (the sessions' own cap bounds the waiting)."""
        job = self._job = StopHandle()
        t0 = time.monotonic()
        try:
            return await self.hub.executor.run(lambda: fn(job), job=job, bounded=False)
        finally:
            self._job = None
            log.debug("session %s %s decode of %s took %.2fs", self.id, what, turn.id, time.monotonic() - t0)

    async def worker(self) -> None:
        """Transcribes the queue's items in order; in between, interim and speculative decodes of the turn in
        progress."""
        while not self.closed:
            if self.queue:
                await self._finish(self.queue[0])
                self.queue.popleft()
                continue
            turn = self.turn
            if turn is not None and self._speculate_due(turn):
                await self._speculate(turn)
                continue
            if turn is not None and self._interim_due(turn):
                await self._interim(turn)
                continue
            self._wake.clear()
            await self._wake.wait()

    def _interim_due(self, turn: Turn) -> bool:
        # not once the speaker paused (the slot is then the speculative final decode's), and at most half the
        # time: after a decode of d seconds, the next one waits d more (a slow model looks less often)
        return (self.turns.trailing_silence()[0] == 0 and turn.last_speech - turn.speech >= INTERIM_MIN_SPEECH
                and self.buffer.end - turn.interim_at >= self.settings.realtime_partial_interval * SAMPLE_RATE
                and time.monotonic() >= self._interim_rest and self.hub.executor.idle())

    def _speculate_due(self, turn: Turn) -> bool:
        silence, _ = self.turns.trailing_silence()
        return (self.config.turn_detection is not None and silence >= SPECULATE_FRAMES
                and (turn.spec is None or turn.spec[0] < turn.last_speech))

    async def _interim(self, turn: Turn) -> None:
        end = self.buffer.end
        turn.interim_at = end
        audio = self.buffer.peek(turn.start, end)
        model, opts = self.model, self._options()
        t0 = time.monotonic()
        try:
            result = await self._run("interim", turn, lambda job: decode.interim(model, audio, opts, job))
        except (APIError, JobStopped):
            return
        finally:
            self._interim_rest = 2 * time.monotonic() - t0
        if result is not None and (self.turn is turn or turn in self.queue):
            delta = turn.deltas.interim(result.text)
            if delta:
                await self.send(events.transcription_delta(turn.id, delta))

    async def _speculate(self, turn: Turn) -> None:
        heard, start = self._context(turn, self.buffer.end)
        context, prefix = self._prefixed(heard, start, turn)
        audio = self.buffer.peek(turn.start, self.buffer.end)
        covered = turn.last_speech
        model, opts, settings = self.model, self._options(), self.final_settings
        try:
            result = await self._run("speculative", turn,
                                     lambda job: decode.final(model, audio, opts, settings, job, context, prefix))
        except (APIError, JobStopped):
            return
        turn.spec = (covered, result)

    async def _finish(self, turn: Turn) -> None:
        assert turn.audio is not None   # a queued turn: _commit set its audio before queueing it
        seconds = turn.audio.size / SAMPLE_RATE
        try:
            if turn.spec is not None and turn.spec[0] >= turn.last_speech:
                result = turn.spec[1]
            else:
                model, opts, settings = self.model, self._options(), self.final_settings
                audio = turn.audio
                context, prefix = self._prefixed(turn.context, turn.context_start, turn)
                result = await self._run("final", turn,
                                         lambda job: decode.final(model, audio, opts, settings, job, context, prefix))
        except JobStopped:
            return
        except APIError as e:
            if self.closed:
                return
            self.hub.count_item("failed")
            self._remember(turn, None)
            await self.send(events.transcription_failed(turn.id, e.message, e.code, e.type))
        except Exception:  # noqa: BLE001 - one failed item: said for that item, the session goes on
            log.exception("realtime transcription failed")
            self.hub.count_item("failed")
            self._remember(turn, None)
            await self.send(events.transcription_failed(turn.id, "The server had an error while transcribing.",
                                                        "internal_error"))
        else:
            self._remember(turn, result.text)
            delta = turn.deltas.final(result.text)
            if delta:
                await self.send(events.transcription_delta(turn.id, delta))
            await self.send(events.transcription_completed(turn.id, result.text, seconds))
            await self.send(events.item_done(turn.id, turn.previous_id, result.text))
            self.hub.count_item("completed", seconds, time.monotonic() - turn.last_speech_at)
        finally:
            self.backlog -= turn.audio.size
            if self.backlog <= self.settings.realtime_max_backlog_seconds * SAMPLE_RATE:
                self._backlog_ok.set()

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """The socket is gone: stop the decode in flight at its next segment, drop every buffer."""
        self.closed = True
        if self._job is not None:
            self._job.cancel("disconnected")
        self.queue.clear()
        self.buffer.clear()
        self.turn = None
        self._wake.set()
        self._backlog_ok.set()
