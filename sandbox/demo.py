"""`make demo`, after the deploy: transcribe sample audio through the sandbox's nginx, as a
user of the platform would, with the runbook's two clients (the openai SDK, and requests'
equivalent for WhisperX's /transcribe with diarization)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from sandbox.client import HTTPS_PORT, STATE, base_url, http_client, secrets

SENTENCE = "The quick brown fox jumps over the lazy dog. Speech recognition works on this platform."
# two voices from the diarization bench's pool (tests/support/synth_conversations.py): voice, pitch, speed
ALICE, BOB = ("en-us+steph", "27", "179"), ("en-gb-x-rp+m1", "22", "153")
DIALOGUE = [
    (ALICE, "Good morning, thank you for joining the meeting today. I hope the trip was fine."),
    (BOB, "Thanks for having me. The train was on time. Shall we start with the budget?"),
    (ALICE, "Yes, the budget is ready and the numbers for the next quarter look good."),
    (BOB, "Great, then we can move on to the schedule and the travel plans for the team."),
]


def _speech(folder: Path) -> tuple[Path, Path]:
    one = folder / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(one), SENTENCE], check=True)
    parts = []
    for i, ((voice, pitch, speed), text) in enumerate(DIALOGUE):
        raw, part = folder / f"turn{i}.raw.wav", folder / f"turn{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", pitch, "-s", speed, "-w", str(raw), text], check=True)
        # same format for every turn, and a short pause after it
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(part), "pad", "0", "0.4"], check=True)
        parts.append(str(part))
    dialogue = folder / "dialogue.wav"
    subprocess.run(["sox", *parts, "-r", "16000", "-c", "1", str(dialogue)], check=True)
    mp3 = folder / "dialogue.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(dialogue), str(mp3)], check=True)
    return one, mp3


def main() -> int:
    s = secrets()
    with tempfile.TemporaryDirectory() as tmp:
        sentence, dialogue = _speech(Path(tmp))

        print("== faster-whisper through nginx + autostart, with the openai SDK (API key) ==")
        client = openai.OpenAI(base_url=base_url("whisper.sandbox.test") + "/v1", api_key=s["WHISPER_API_KEY"],
                               http_client=http_client("whisper.sandbox.test"), max_retries=0)
        started = time.monotonic()
        with open(sentence, "rb") as f:
            result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
        print(f"  ({time.monotonic() - started:.1f} s, a cold start included when the service was idle)  {result.text}")

        print("== WhisperX /transcribe with diarization (basic auth) ==")
        with http_client("whisperx.sandbox.test") as http, open(dialogue, "rb") as f:
            started = time.monotonic()
            response = http.post(
                base_url("whisperx.sandbox.test") + "/transcribe",
                auth=(s["WHISPER_BASIC_AUTH_USER"], s["WHISPER_BASIC_AUTH_PASSWORD"]),
                files={"file": ("dialogue.mp3", f, "audio/mpeg")},
                data={"language": "en", "diarize": "true"},
            )
        if response.status_code != 200:
            print(f"  HTTP {response.status_code}: {response.text[:500]}")
            return 1
        print(f"  ({time.monotonic() - started:.1f} s, a cold start included when the service was idle)")
        for segment in response.json()["segments"]:
            print(f"  [{segment.get('speaker', '?')}] {segment['text'].strip()}")

    print()
    print(f"Credentials: {STATE / 'secrets.env'} (WHISPER_BASIC_AUTH_USER/PASSWORD, WHISPER_API_KEY)")
    print(f"Swagger: https://whisper.sandbox.test:{HTTPS_PORT}/docs and https://whisperx.sandbox.test:{HTTPS_PORT}/docs")
    print(f"  (map both names to 127.0.0.1 in /etc/hosts, or use curl --resolve NAME:{HTTPS_PORT}:127.0.0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
