"""A live turn's final decode with the encoder hearing the whole 30 s window against the audio and a few seconds of
its padding (STT_REALTIME_WINDOW_PADDING), side by side in one run: the service's own `decode.final` and
`decode.short_window`, French turns with base, each heard after the earlier turns that fit in 10 s of context with
their transcripts as the prefix, as a live session decodes them.

    .venv-ml/bin/python bench/realtime_window.py                    # paddings 0 (the whole window), 2, 3, 5 s
    .venv-ml/bin/python bench/realtime_window.py --paddings 0,5 --speeds 1.0

The turns: the 25 French sentences of `realtime.py --long`, spoken by both voices in turn, once per speed (the voices swap each round). Prints WER (all rounds'
transcripts against their sentences) and the median and p95 time of one decode, per padding.
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

# run as a script, bench/ is sys.path[0]: keep its modules from shadowing the stdlib
_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_abs(__file__)))  # ...but its helpers stay importable, after the stdlib

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("images/common", "images/faster", "tests", "."):
    _sys.path.insert(0, str(ROOT / sub))

CONTEXT_SECONDS = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paddings", default="0,2,3,5", help="seconds of padding the encoder hears; 0 = the window")
    ap.add_argument("--speeds", default="0.9,1.0,1.1", help="one round of the turns per speaking speed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from faster_server.engine import Options, load_model
    from faster_server.realtime import decode
    from faster_server.settings import FasterSettings
    from realtime import FRENCH_LONG
    from sandbox.models import base
    from stt_common import StopHandle
    from support import neural_speech
    from support.transcript_wer import wer

    settings = FasterSettings(model=str(base()), cpu_threads=args.threads)
    model = load_model(settings.model, settings)
    texts = [t for _, t in FRENCH_LONG]
    rounds = []
    for r, speed in enumerate(float(s) for s in args.speeds.split(",")):
        voices = neural_speech.VOICES[r % 2:] + neural_speech.VOICES[:r % 2]
        rounds.append([(neural_speech.read(neural_speech.speak(t, voices[i % 2], lang="fr-fr", speed=speed)), t)
                       for i, t in enumerate(texts)])
    seconds = sum(a.size for turns in rounds for a, _ in turns) / 16000
    print(f"{len(rounds)} rounds of {len(texts)} French turns, {seconds:.0f} s of speech, base, "
          f"{args.threads} threads, beam {settings.beam_size}", flush=True)

    import numpy as np
    opts = Options(language="fr")
    rows = []
    for padding in (float(p) for p in args.paddings.split(",")):
        windowed = decode.short_window(model, padding)
        hyps, refs, took = [], [], []
        for turns in rounds:
            done: list[tuple[np.ndarray, str]] = []
            for audio, ref in turns:
                context, prefix, heard = [], [], audio.size / 16000
                for earlier, text in reversed(done):
                    if heard + earlier.size / 16000 > CONTEXT_SECONDS:
                        break
                    context.insert(0, earlier)
                    prefix.insert(0, text)
                    heard += earlier.size / 16000
                t0 = time.perf_counter()
                result = decode.final(windowed, audio, opts, settings, StopHandle(),
                                      np.concatenate(context) if context else None, " ".join(prefix))
                took.append(time.perf_counter() - t0)
                done.append((audio, result.text))
                hyps.append(result.text)
                refs.append(ref)
        rows.append((padding, wer(" ".join(refs), " ".join(hyps), "fr"), statistics.median(took),
                     sorted(took)[int(0.95 * (len(took) - 1))]))
        print(f"  padding {padding:g} s: done", flush=True)

    whole = next((r for r in rows if r[0] <= 0 or r[0] >= 30), rows[0])
    print("\n| encoder hears | WER | decode median / p95 | time vs the whole window |")
    print("| --- | --- | --- | --- |")
    for padding, w, med, p95 in rows:
        label = "the whole 30 s window" if padding <= 0 or padding >= 30 else f"the audio + {padding:g} s"
        print(f"| {label} | {w:.3f} | {med:.2f} s / {p95:.2f} s | {med / whole[2]:.2f}x |")


if __name__ == "__main__":
    main()
