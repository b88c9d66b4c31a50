"""Live transcription's pure parts: the session configuration (GA and beta `session.update`), audio input formats,
turn detection on frame probabilities, the deltas' agreement, the input buffer, client secrets, and the executor's
hooks for sessions. The protocol against a real model and the openai SDK: tests/integration/faster/test_realtime*.py."""
import asyncio
import base64
import collections
import threading
import time

import numpy as np
import pytest

from faster_server.realtime.audio import G711, AudioInput
from faster_server.realtime.config import SessionConfig, TurnDetection, apply_beta, apply_ga
from faster_server.realtime.decode import Deltas, looping, short_window, trim_padding, words
from faster_server.realtime.events import ProtocolError, error_event
from faster_server.realtime.secrets import ClientSecrets
from faster_server.realtime.session import Buffer
from faster_server.realtime.vad import TurnDetector
from stt_common import APIError, InferenceExecutor


# ---------------------------------------------------------------- configuration
def test_ga_update_sets_only_what_it_names():
    cfg = apply_ga(SessionConfig(), {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "base", "language": "FR", "prompt": "Réunion.\nKubernetes"},
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200,
                           "silence_duration_ms": 700, "create_response": False}}}})
    assert (cfg.model, cfg.language, cfg.prompt) == ("base", "fr", "Réunion.\nKubernetes")
    assert cfg.turn_detection == TurnDetection(0.6, 200, 700)
    cfg = apply_ga(cfg, {"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 0.3}}}})
    assert cfg.turn_detection == TurnDetection(0.3, 200, 700) and cfg.model == "base"
    cfg = apply_ga(cfg, {"type": "transcription", "audio": {"input": {"turn_detection": None}}})
    assert cfg.turn_detection is None and cfg.language == "fr"
    shown = cfg.to_ga("sess_1", "base", 123)
    assert shown["type"] == "transcription" and shown["audio"]["input"]["turn_detection"] is None
    assert shown["audio"]["input"]["transcription"] == {"model": "base", "language": "fr",
                                                        "prompt": "Réunion.\nKubernetes"}
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_ga_update_parses_as_the_sdk_types_it():
    from openai.types.realtime.session_updated_event import SessionUpdatedEvent
    shown = SessionConfig().to_ga("sess_1", "tiny.en", 123)
    ev = SessionUpdatedEvent.model_validate({"type": "session.updated", "event_id": "event_1", "session": shown})
    assert ev.session.type == "transcription" and ev.session.audio.input.turn_detection.silence_duration_ms == 500


def test_beta_update_and_shape():
    cfg = apply_beta(SessionConfig(), {"input_audio_format": "g711_ulaw",
                                       "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
                                       "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}})
    assert (cfg.format, cfg.input_rate, cfg.language) == ("audio/pcmu", 8000, "fr")
    beta = cfg.to_beta("sess_1", "whisper-1", 1)
    assert beta["input_audio_format"] == "g711_ulaw" and beta["turn_detection"]["silence_duration_ms"] == 300


@pytest.mark.parametrize("session, param, code", [
    ({"type": "realtime"}, "session.type", "unsupported_session_type"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
     "session.audio.input.turn_detection.type", "unsupported_turn_detection"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 1.5}}}},
     "session.audio.input.turn_detection.threshold", "invalid_value"),
    ({"type": "transcription", "audio": {"input": {"turn_detection": {"silence_duration_ms": "500"}}}},
     "session.audio.input.turn_detection.silence_duration_ms", "invalid_value"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 11025}}}},
     "session.audio.input.format.rate", "invalid_value"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"modle": "base"}}}},
     "session.audio.input.transcription.modle", "unknown_parameter"),
    ({"type": "transcription", "audio": {"input": {"transcription": {"language": "f\x00r"}}}},
     "session.audio.input.transcription.language", "invalid_value"),
    ({"type": "transcription", "audio": "pcm"}, "session.audio", "invalid_type"),
    ("transcription", "session", "invalid_type"),
])
def test_bad_updates_name_their_parameter(session, param, code):
    with pytest.raises(ProtocolError) as e:
        apply_ga(SessionConfig(), session)
    assert (e.value.param, e.value.code) == (param, code)
    ev = e.value.event("evt_client")
    assert ev["type"] == "error" and ev["error"]["param"] == param and ev["error"]["event_id"] == "evt_client"


def test_error_event_parses_as_the_sdk_types_it():
    from openai.types.realtime.realtime_error_event import RealtimeErrorEvent
    ev = RealtimeErrorEvent.model_validate(error_event("nope", code="invalid_event", param="type"))
    assert ev.error.code == "invalid_event" and ev.error.type == "invalid_request_error"


# ---------------------------------------------------------------- audio
def test_pcm16_at_24k_becomes_16k_float():
    a = AudioInput("audio/pcm", 24000)
    tone = (np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000) * 16000).astype("<i2")
    out = np.concatenate([a.decode(base64.b64encode(tone[i:i + 2400].tobytes()).decode())
                          for i in range(0, 24000, 2400)])
    assert out.dtype == np.float32 and abs(out.size - 16000) <= 64
    assert 0.45 < np.abs(out[1000:15000]).max() < 0.52   # 16000/32768, the same tone


def test_pcm16_at_16k_is_not_resampled():
    samples = np.array([0, 16384, -32768], "<i2")
    out = AudioInput("audio/pcm", 16000).decode(base64.b64encode(samples.tobytes()).decode())
    assert out.tolist() == [0.0, 0.5, -1.0]


def test_g711_tables_match_the_standard():
    # ITU-T G.711: mu-law 0xFF and A-law 0xD5 are the smallest positive steps, 0x80 / 0xAA the largest
    assert G711["audio/pcmu"][0xFF] == 0 and G711["audio/pcmu"][0x80] == 32124 and G711["audio/pcmu"][0x00] == -32124
    assert G711["audio/pcma"][0xD5] == 8 and G711["audio/pcma"][0xAA] == 32256 and G711["audio/pcma"][0x2A] == -32256
    out = AudioInput("audio/pcmu", 8000).decode(base64.b64encode(bytes([0xFF, 0x80] * 4000)).decode())
    assert abs(out.size - 16000) <= 64


@pytest.mark.parametrize("audio, fragment", [
    ("not base64!", "not valid base64"), (base64.b64encode(b"abc").decode(), "3 bytes"), (123, "base64 string")])
def test_bad_audio_is_a_protocol_error(audio, fragment):
    with pytest.raises(ProtocolError) as e:
        AudioInput().decode(audio)
    assert fragment in e.value.message and e.value.param == "audio"


# ---------------------------------------------------------------- turns
def test_turns_start_after_three_frames_and_stop_after_the_silence():
    td = TurnDetector(threshold=0.5, silence_ms=500)   # 16 frames of 32 ms
    assert td.process(np.array([0.9, 0.9, 0.1, 0.9])) == []                    # a click is no turn
    events = td.process(np.array([0.9, 0.9, 0.9]))
    assert [(e.kind, e.frame) for e in events] == [("start", 3)]
    assert td.process(np.full(15, 0.2)) == []                                   # below 0.35, not yet 500 ms
    assert td.trailing_silence() == (15, 6)
    assert td.process(np.array([0.4])) == [] and td.trailing_silence() == (0, 22)   # 0.4 >= 0.35: speech goes on
    events = td.process(np.full(16, 0.0))
    assert [(e.kind, e.frame) for e in events] == [("stop", 38)] and not td.speaking


# ---------------------------------------------------------------- deltas
def test_deltas_send_what_two_interim_decodes_agree_on():
    d = Deltas()
    assert d.interim("Bonjour") == ""                       # the first decode: all but its last word
    assert d.interim("Bonjour à") == "Bonjour"
    assert d.interim("Bonjour, à tous") == " à"            # "Bonjour," is "Bonjour" to the agreement
    assert d.interim("Bonjour, à tous. Nous") == " tous."
    assert d.final("Bonjour à tous. Nous commençons.") == " Nous commençons."
    assert d.text == "Bonjour à tous. Nous commençons."


def test_deltas_after_a_correction_continue_where_the_final_matches():
    d = Deltas()
    assert d.interim("But the weather") == "But the"       # the first decode: all but its last word
    assert d.interim("But the weather is") == " weather"
    assert d.final("The weather is sunny.") == " is sunny."
    d = Deltas()
    assert d.final("Hello world.") == "Hello world." and words(" a  b") == [" a", "  b"]


# ---------------------------------------------------------------- buffer
def test_the_encoder_hears_the_audio_and_some_padding_not_the_whole_window():
    audio = np.random.default_rng(0).normal(size=(80, 437)).astype(np.float32)
    padded = np.pad(audio, ((0, 0), (0, 3000 - 437)))
    assert trim_padding(padded, 300).shape == (80, 800)              # 437 + 300 frames, up to a whole second
    assert trim_padding(padded[None], 300).shape == (1, 80, 800)     # the batch axis kept
    assert trim_padding(padded, 2700).shape == (80, 3000)            # never longer than the window
    assert np.array_equal(trim_padding(padded, 300)[:, :437], audio)
    assert trim_padding(np.zeros((80, 3000), np.float32), 300).shape == (80, 300)   # silence: the padding alone

    class Model:
        seen = []

        def encode(self, features):
            self.seen.append(features.shape)
            return "encoded"

    model = Model()
    windowed = short_window(model, 3.0)
    assert windowed is not model and windowed.encode(padded) == "encoded" and Model.seen == [(80, 800)]
    assert model.encode(padded) == "encoded" and Model.seen[-1] == (80, 3000)     # the model itself is untouched
    assert short_window(model, 0) is model and short_window(model, 30) is model


@pytest.mark.parametrize("text, loops", [
    ("Good more, good more, good more, good more, good", True),     # greedy on the first half second of a turn
    ("Bonjour Pierre, tu as reçu le compte rendu", False),
    ("Non, non, non, je ne crois pas.", False),                      # speech repeats a word...
    ("la la la la la la", True),                                     # ...not five times
    ("Le train part. Le train part. Le train part.", True),
    ("", False),
])
def test_an_interim_decode_that_loops_is_not_shown(text, loops):
    assert looping(text) is loops


def test_buffer_keeps_positions_across_takes_and_drops():
    b = Buffer()
    for i in range(5):
        b.append(np.full(100, i, np.float32))
    assert (b.start, b.end) == (0, 500)
    assert b.peek(150, 250).tolist() == [1.0] * 50 + [2.0] * 50
    b.drop_before(120)
    assert b.start == 120 and b.peek(120, 130).tolist() == [1.0] * 10
    taken = b.take(310)
    assert taken.size == 190 and b.start == 310 and b.peek(310, 320).tolist() == [3.0] * 10
    b.clear()
    assert b.start == b.end == 500 and b.peek(0, 500).size == 0


def _session_with_history(history, floor=0, context_seconds=10):
    """A Session's context bookkeeping alone (timeline at 16 kHz; no socket, no model)."""
    from faster_server.realtime.session import Session, Turn
    s = Session.__new__(Session)
    s.recent, s.context_floor, s.context_samples = Buffer(), floor, context_seconds * 16000
    s.recent.append(np.arange(40 * 16000, dtype=np.float32))
    s.history = collections.deque(history)
    return s, Turn


def test_a_turn_hears_the_whole_earlier_turns_that_fit_with_their_transcripts():
    sec = 16000
    s, Turn = _session_with_history([(0 * sec, "Bonjour."), (4 * sec, "Ça va ?"), (9 * sec, "Oui.")])
    turn = Turn("item_c", 12 * sec)
    context, start = s._context(turn, 14 * sec)             # 10 s in all: the context may begin at 4 s
    assert start == 4 * sec and context.size == 8 * sec
    audio, prefix = s._prefixed(context, start, turn)
    assert prefix == "Ça va ? Oui." and audio.size == 8 * sec and audio[0] == 4 * sec   # from the turn at 4 s on
    s.history[1] = (4 * sec, None)                          # a failed turn: nothing before it is heard
    audio, prefix = s._prefixed(context, start, turn)
    assert prefix == "Oui." and audio.size == 3 * sec and audio[0] == 9 * sec
    s.history.pop()
    s.history.pop()                                         # nothing transcribed since: the turn alone
    assert s._prefixed(context, start, turn) == (None, "")


def test_a_cleared_buffer_is_never_heard_as_context():
    sec = 16000
    s, Turn = _session_with_history([(2 * sec, "Bonjour.")], floor=5 * sec)
    turn = Turn("item_d", 7 * sec)
    context, start = s._context(turn, 8 * sec)
    assert start == 5 * sec and s._prefixed(context, start, turn) == (None, "")
    long_turn = Turn("item_e", 20 * sec)                    # a turn as long as the window: decoded alone
    assert s._context(long_turn, 31 * sec) == (None, 0)


# ---------------------------------------------------------------- client secrets
def test_client_secrets_open_one_session_within_their_life():
    store = ClientSecrets(max_ttl=60, max_count=2)
    cfg = SessionConfig(language="fr")
    value, expires_at = store.mint(cfg, ttl=30)
    assert value.startswith("ek_") and abs(expires_at - (time.time() + 30)) < 2
    assert store.redeem(value) == cfg
    assert store.redeem(value) is None                    # single session
    assert store.redeem("ek_unknown") is None and store.redeem("sk-anything") is None
    with pytest.raises(APIError) as e:
        store.mint(cfg, ttl=600)
    assert e.value.status == 400 and e.value.param == "expires_after.seconds"
    store.mint(cfg)
    store.mint(cfg)
    with pytest.raises(APIError) as e:
        store.mint(cfg)
    assert e.value.status == 429


def test_expired_client_secret_is_refused(monkeypatch):
    store = ClientSecrets(max_ttl=60, max_count=5)
    value, _ = store.mint(SessionConfig(), ttl=10)
    later = time.monotonic() + 11
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert store.redeem(value) is None and len(store) == 0


# ---------------------------------------------------------------- executor hooks
def test_sessions_wait_in_line_beyond_the_queue_bound():
    async def main():
        ex = InferenceExecutor(max_concurrency=1, max_queue=0)
        gate = threading.Event()
        first = asyncio.ensure_future(ex.run(lambda: gate.wait(5)))
        await asyncio.sleep(0.05)
        assert not ex.idle()
        with pytest.raises(APIError):               # the file routes' line is full
            await ex.run(lambda: 1)
        second = asyncio.ensure_future(ex.run(lambda: 2, bounded=False))   # a session's decode waits its turn
        await asyncio.sleep(0.05)
        assert ex.waiting == 1
        gate.set()
        assert await second == 2 and await first is True and ex.idle()
        ex.shutdown()

    asyncio.run(main())
