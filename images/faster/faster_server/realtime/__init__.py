"""Live transcription: OpenAI's Realtime API in transcription mode, over a WebSocket (`/v1/realtime`).

    settings.py   the STT_REALTIME_* knobs
    events.py     ids, the server events and Realtime `error` events
    config.py     the session configuration and its `session.update` (GA and beta shapes)
    audio.py      appended audio (base64 PCM16 24 kHz, G.711) to the model's 16 kHz
    vad.py        server VAD: silero frame by frame, turns with OpenAI's threshold, padding and silence
    decode.py     a turn's decodes (interim and final) and the interim text's stable deltas
    session.py    one session: buffer, turns, the ordered transcription of its items, its limits
    secrets.py    ephemeral client secrets for browsers (single session, short life)
    routes.py     the WebSocket route, the client-secret routes and the /live captions page
"""
