"""Live transcription in French: the multilingual `base` chosen in the session (the server's default stays the
English-only tiny.en, as on the sandbox), neural French speech (tests/support/neural_speech.py), the openai SDK's realtime
client. The same audio sent as a file is the yardstick. `base_server`: conftest.py."""
from __future__ import annotations

import asyncio

import pytest

from support.realtime_support import connect, recording, run_session, sdk_client, transcription_session
from support.transcript_wer import wer

neural_speech = pytest.importorskip("support.neural_speech")

MAX_WER_FR = 0.15   # as the file route's French test: base on the Kokoro voices


@pytest.fixture(scope="module")
def french():
    parts = [(neural_speech.or_skip(neural_speech.speak, neural_speech.FRENCH[k], voice), neural_speech.FRENCH[k])
             for k, voice in (("meeting", "jf_nezumi"), ("weather", "jm_kumo"))]
    return recording(parts)


def test_french_session_with_base(base_server, french):
    async def main():
        client = sdk_client(base_server.url + "/v1", "not-needed")
        async with connect(client) as conn:
            await conn.session.update(session=transcription_session(model="base", language="fr"))
            return await run_session(conn, french.pcm, pace=2.0, timeout=300)

    r = asyncio.run(main())
    updated = r.of_type("session.updated")[0]["session"]["audio"]["input"]["transcription"]
    assert (updated["model"], updated["language"]) == ("base", "fr")
    assert len(r.completed) >= len(french.utterances)    # the speakers' pauses between sentences end turns too
    assert wer(french.text, r.text, "fr") <= MAX_WER_FR, r.text
    with open(_wav(french), "rb") as f:
        import openai
        file = openai.OpenAI(base_url=base_server.url + "/v1", api_key="x", max_retries=0).audio.transcriptions.create(
            file=f, model="base", language="fr")
    # about as good as the file route on the same audio, which has the whole recording as context (the measured
    # comparison, on longer audio: bench/realtime.py)
    assert wer(french.text, r.text, "fr") <= max(1.1 * wer(french.text, file.text, "fr"), 0.08), (r.text, file.text)


def _wav(rec):
    import tempfile
    import wave
    path = tempfile.NamedTemporaryFile(suffix=".wav", delete=False).name
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(rec.pcm.tobytes())
    return path
