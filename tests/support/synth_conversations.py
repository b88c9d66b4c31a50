"""Synthetic multi-speaker conversations from espeak-ng voices, with reference RTTM.

Stable API (other tests import it):

    from support.synth_conversations import make_conversation
    conv = make_conversation(n_speakers=2, seed=0, out_dir=tmp, duration_s=60, overlaps=False)
    conv.wav_path, conv.rttm_path, conv.turns  # [(start, end, speaker, text), ...]
    conv.voices                                # {speaker: VOICE_POOL entry}

Needs only numpy, the standard library and the `espeak-ng` and `sox` programs, so it runs in
either project venv. Output is deterministic for a given (n_speakers, seed, duration_s, overlaps)
and is cached in out_dir: a second call with the same arguments reuses the files.

Turns last 1-8 s (one run of words, so espeak-ng speaks them without inner pauses); between
turns there is a pause of 0.2-1.5 s, or with overlaps=True, in about one turn in five, the
next speaker starts 0.3-1.0 s before the current one stops. The reference RTTM gives each
turn's voiced extent (the synthesized clip with leading/trailing silence trimmed).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
GENERATOR_VERSION = 3

# espeak-ng voices whose speaker embeddings stay apart. Picked greedily from 60 candidates
# (5 accents x 30 variants, random pitch and speed; `python bench/diarization.py --select-voices`)
# so that each added voice has the lowest highest cosine similarity to those already in the pool,
# by resemblyzer (max 0.72 here) and CAM++ (max 0.70); one voice against itself on other text
# scores about 0.98, and near-duplicates among the candidates scored up to 0.98 (en-gb+f2 vs
# en-gb+klatt2, en-gb+f4 vs en-gb+michel). bench/diarization.py prints the pool's matrix.
# Each entry: (voice, pitch 0-99, words per minute).
VOICE_POOL: list[tuple[str, int, int]] = [
    ("en-us+steph", 27, 179),
    ("en-gb-x-rp+m1", 22, 153),
    ("en-gb-scotland+linda", 75, 166),
    ("en-us+robert", 62, 186),
    ("en-029+f1", 47, 189),
    ("en-gb-scotland+Diogo", 20, 154),
    ("en-gb-x-rp+klatt3", 67, 162),
    ("en-us+Andy", 76, 153),
]

_WORDS = (
    "the meeting starts at nine and we will review the budget for the next quarter before lunch "
    "please send me the report about the new office and the travel plans for the team "
    "our customers asked for a faster service so we should test the system again tomorrow "
    "the weather was cold this morning but the train arrived on time at the station "
    "i think the project needs more people because the deadline is very close now "
    "can you check the numbers in the table and call the supplier about the delivery "
    "we moved the servers to the new building last week and everything works well "
    "the river near the old bridge is quiet in the evening when the shops are closed "
    "my sister bought a green bicycle and rides it to the market every saturday "
    "the doctor said that a short walk after dinner is good for your health "
    "let us write the summary together and share it with the whole group later today "
    "the printer on the second floor is broken again so use the one near the kitchen"
).split()


@dataclass
class Conversation:
    wav_path: Path
    rttm_path: Path
    turns: list[tuple[float, float, str, str]]
    voices: dict[str, tuple[str, int, int]]
    duration_s: float
    uri: str
    n_speakers: int = field(default=0)

    @property
    def speakers(self) -> list[str]:
        return sorted({t[2] for t in self.turns})

    def text(self) -> str:
        """All spoken text in time order (for WER checks)."""
        return " ".join(t[3] for t in sorted(self.turns))


def _synth(voice: tuple[str, int, int], text: str) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32, leading/trailing silence trimmed."""
    name, pitch, speed = voice
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = os.path.join(tmp, "a.wav"), os.path.join(tmp, "b.wav")
        subprocess.run(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", raw, text],
                       check=True, capture_output=True)
        subprocess.run(["sox", "-R", "-D", raw, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", out],
                       check=True, capture_output=True)
        audio = _read_wav(out)
    level = np.abs(audio)
    voiced = np.flatnonzero(level > 0.02 * max(level.max(), 1e-6))
    if voiced.size == 0:
        return audio
    return audio[voiced[0]: voiced[-1] + 1]


def _read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def _write_wav(path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def write_rttm(path, uri: str, turns) -> None:
    with open(path, "w") as f:
        for start, end, speaker, *_ in sorted(turns):
            f.write(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>\n")


def _turn_text(rng: random.Random, target_s: float, words_per_s: float) -> str:
    n = max(2, round(target_s * words_per_s))
    start = rng.randrange(len(_WORDS))
    return " ".join(_WORDS[(start + i) % len(_WORDS)] for i in range(n))


def make_conversation(n_speakers: int, seed: int, out_dir, duration_s: float = 60.0,
                      overlaps: bool = False, voices=None) -> Conversation:
    """Generate (or reuse from out_dir) one conversation; see the module docstring."""
    pool = [tuple(v) for v in voices] if voices is not None else VOICE_POOL
    duration_s = float(duration_s)
    if not 1 <= n_speakers <= len(pool):
        raise ValueError(f"n_speakers must be 1..{len(pool)}")
    key = json.dumps([GENERATOR_VERSION, n_speakers, seed, duration_s, overlaps, pool])
    uri = f"synth_{n_speakers}spk_s{seed}_{int(duration_s)}s{'_ov' if overlaps else ''}_" \
          f"{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_path, rttm_path, meta_path = (out_dir / f"{uri}{ext}" for ext in (".wav", ".rttm", ".json"))
    if meta_path.exists() and wav_path.exists() and rttm_path.exists():
        meta = json.loads(meta_path.read_text())
        return Conversation(wav_path, rttm_path, [tuple(t) for t in meta["turns"]],
                            {k: tuple(v) for k, v in meta["voices"].items()}, meta["duration_s"], uri,
                            n_speakers)

    rng = random.Random(seed * 1000 + n_speakers)
    chosen = rng.sample(pool, n_speakers)
    speakers = [f"spk{i}" for i in range(n_speakers)]
    voice_of = dict(zip(speakers, chosen))

    # every speaker talks early on, then a random other speaker takes each turn
    order = speakers[:]
    rng.shuffle(order)
    pieces: list[tuple[int, np.ndarray]] = []
    turns = []
    cursor = 0.5  # seconds: leading silence
    prev_end = 0.0
    i = 0
    while cursor < duration_s:
        if i < n_speakers:
            spk = order[i]
        else:
            spk = rng.choice([s for s in speakers if s != turns[-1][2]] or speakers)
        target = rng.uniform(1.0, 8.0)
        voice = voice_of[spk]
        text = _turn_text(rng, target, voice[2] / 60.0)
        audio = _synth(voice, text)
        while audio.size < 1.0 * SAMPLE_RATE:  # keep within the 1-8 s turn range
            text = text + " " + _turn_text(rng, 0.5, voice[2] / 60.0)
            audio = _synth(voice, text)
        if audio.size > 8.0 * SAMPLE_RATE:  # keep within the 1-8 s turn range
            words = text.split()
            text = " ".join(words[: max(2, int(len(words) * 7.5 * SAMPLE_RATE / audio.size))])
            audio = _synth(voice, text)
        if i > 0 and overlaps and rng.random() < 0.2:
            start = max(turns[-1][0] + 0.5, prev_end - rng.uniform(0.3, 1.0))
        else:
            start = prev_end + rng.uniform(0.2, 1.5) if i > 0 else cursor
        start = round(start, 3)
        end = round(start + audio.size / SAMPLE_RATE, 3)
        pieces.append((int(round(start * SAMPLE_RATE)), audio * 0.8))
        turns.append((start, end, spk, text))
        prev_end = max(prev_end, end)
        cursor = prev_end
        i += 1

    total = prev_end + 0.5
    mix = np.zeros(int(total * SAMPLE_RATE) + 1, dtype=np.float32)
    for offset, audio in pieces:
        mix[offset: offset + audio.size] += audio
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix *= 0.99 / peak
    _write_wav(wav_path, mix)
    write_rttm(rttm_path, uri, turns)
    meta = {"turns": turns, "voices": voice_of, "duration_s": round(total, 3), "seed": seed,
            "n_speakers": n_speakers, "overlaps": overlaps}
    meta_path.write_text(json.dumps(meta, indent=1))
    return Conversation(wav_path, rttm_path, [tuple(t) for t in turns], voice_of, round(total, 3), uri,
                        n_speakers)


def load_audio(path) -> np.ndarray:
    """Read a wav written by this module as 16 kHz mono float32."""
    return _read_wav(path)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speakers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--overlaps", action="store_true")
    p.add_argument("--out", default="bench/results/synth")
    a = p.parse_args()
    c = make_conversation(a.speakers, a.seed, a.out, a.duration, a.overlaps)
    print(c.wav_path, c.rttm_path, len(c.turns), "turns", c.duration_s, "s")
