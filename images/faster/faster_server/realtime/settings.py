"""The knobs of live transcription (STT_REALTIME_*), mixed into the faster service's settings."""
from __future__ import annotations

from pydantic import BaseModel, Field


class RealtimeSettings(BaseModel):
    """Realtime transcription sessions (`/v1/realtime`, OpenAI's Realtime API in transcription mode).

    Every session shares the service's model cache and its inference slots (STT_MAX_CONCURRENCY) with the file
    routes; these bound what one session, and all of them together, may hold."""

    realtime_max_sessions: int = Field(
        4, ge=0, description="Sessions open at once; one more is answered with an `error` event (code "
                             "`session_limit_reached`) and closed with 1013 (try again later). 0 turns the route off.")
    realtime_max_session_seconds: float = Field(
        3600, gt=0, description="A session's longest life (OpenAI's: 60 minutes); then an `error` event "
                                "(`session_expired`) and the socket closes.")
    realtime_idle_timeout: float = Field(
        600, gt=0, description="Seconds without speech (server VAD) and without any client event but audio "
                               "(without turn detection: without any event at all) before the session is closed "
                               "with an `error` event (`session_idle_timeout`): a tab left open in a silent room "
                               "does not hold the service awake.")
    realtime_max_buffer_seconds: float = Field(
        60, ge=1, description="Audio the input buffer holds before a commit. With server VAD, a turn this long is "
                              "committed as it is (an item); without turn detection an append beyond it is refused "
                              "(`input_audio_buffer_full`), the buffer kept.")
    realtime_max_backlog_seconds: float = Field(
        30, ge=1, description="Committed audio waiting for its transcription. Beyond it the session stops reading "
                              "the socket until the backlog shrinks: a client sending faster than the server "
                              "transcribes is slowed down by TCP itself, never buffered without bound.")
    realtime_max_event_bytes: int = Field(
        2 * 1024 * 1024, ge=64 * 1024, description="The largest WebSocket message a client may send (an append of "
                                                   "about 30 s of 24 kHz audio in base64); a larger one closes the "
                                                   "socket (1009).")
    realtime_context_seconds: float = Field(
        10, ge=0, le=28, description="A turn is decoded after the earlier turns that fit with it in this many seconds, "
                                     "their transcripts handed to the decoder as the start of its text: Whisper is "
                                     "more accurate inside a longer window, and slower. French with base on 2 "
                                     "cores, 25 turns (bench/README.md): WER 0.135 and 0.63 s a decode with 10 s, "
                                     "0.111 and 1.50 s with 20 s, 0.084 (the file's: 0.081) and 1.95 s with 28 s; "
                                     "`completed` comes a decode and about 0.35 s after the speech ends. A turn this long or "
                                     "longer is decoded alone; 0 = every turn alone.")
    realtime_window_padding: float = Field(
        5, ge=0, le=30, description="Seconds of the silence Whisper pads its 30 s window with that a live decode's "
                                    "encoder hears after the audio, in place of the whole window: the encoder's "
                                    "time grows with what it hears. French with base on 2 cores, 75 turns each "
                                    "heard after 10 s of context (bench/realtime_window.py): a turn decoded in "
                                    "half the time, for the same WER; 2 s loses words at the ends of sentences. "
                                    "0 = the whole window.")
    realtime_partial_interval: float = Field(
        0.3, ge=0.1, description="Seconds of new speech between two interim decodes of the turn in progress (its "
                                 "`delta` events); they run only while an inference slot is free, and after a "
                                 "decode of d seconds the next waits d more. French with base through nginx and "
                                 "the proxy: the first delta 0.78 s after the speech starts (median) with 0.3, "
                                 "1.17 s with 0.5, the completed event as soon.")
    realtime_beam_size: int = Field(
        0, ge=0, le=20, description="Beam size of a turn's final decode; 0 = STT_BEAM_SIZE (the file routes' own, so "
                                    "a live transcript is as accurate as the file's).")
    realtime_client_secret_ttl: int = Field(
        60, ge=10, le=7200, description="Longest life of an ephemeral client secret "
                                        "(POST /v1/realtime/client_secrets), and its default; each opens one session.")
    realtime_max_client_secrets: int = Field(
        1000, ge=1, description="Unused client secrets kept at once; more are refused with 429 until some expire.")
