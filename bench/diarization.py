"""Offline diarization benchmark: DER, speaker-count accuracy, speed, memory, voice-pool similarities.

    .venv-ml/bin/python bench/diarization.py                 # full table (about 10-15 min on 2 cores)
    .venv-ml/bin/python bench/diarization.py --seeds 2 --no-memory   # quick look
    .venv-ml/bin/python bench/diarization.py --select-voices # re-measure candidate voices (slow)

Synthetic conversations come from tests/support/synth_conversations.py (espeak-ng, fixed seeds, 1/2/3/4
speakers, with and without short overlaps). DER is pyannote.metrics' DiarizationErrorRate with the
standard 0.25 s collar, summed over files per speaker count. Speed is printed as audio seconds per
wall second and per CPU second/threads (neighbours on a shared machine stretch wall time), with
torch on `--threads` threads, plus a side-by-side run of 1 vs 2 threads on the 2-core host. Peak RSS is measured
in a fresh child process per length (10 and 60 min): whole-run peak, RSS with the models loaded,
after reading the audio, and the peak while diarizing alone (the kernel's peak mark is reset
through /proc/self/clear_refs after the audio is read).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "images" / "diarize")):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

from support.synth_conversations import VOICE_POOL, _synth, _WORDS, load_audio, make_conversation  # noqa: E402

CACHE = ROOT / "bench" / "results" / "synth"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_now_mib() -> float:
    return _status_mib("VmRSS")


def _hwm_mib() -> float:
    return _status_mib("VmHWM")


def score(diarizer, conv):
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    audio = load_audio(conv.wav_path)
    t0, c0 = time.perf_counter(), time.process_time()
    df = diarizer(audio)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ref = load_rttm(conv.rttm_path)[conv.uri]
    metric = DiarizationErrorRate(collar=0.25)
    from pyannote.core import Segment, Timeline

    uem = Timeline([Segment(0, conv.duration_s)])
    comp = metric(ref, diarizer.annotation(df, conv.uri), uem=uem, detailed=True)
    return comp, df.speaker.nunique(), audio.size / 16000, wall, cpu


def accuracy_table(diarizer, seeds, duration, threads):
    rows = []
    print(f"\n## DER / speaker count ({len(seeds)} seeds x overlaps off/on, {duration:.0f} s each, "
          f"{threads} threads)\n")
    print("| speakers | files | DER | miss | false alarm | confusion | count right | x real time (wall) "
          "| x real time (CPU/threads) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (1, 2, 3, 4):
        tot = {"total": 0.0, "missed detection": 0.0, "false alarm": 0.0, "confusion": 0.0}
        right = files = 0
        audio_s = wall_s = cpu_s = 0.0
        misses = []
        for seed in seeds:
            for ov in (False, True):
                conv = make_conversation(n, seed, CACHE, duration, ov)
                comp, k, a, w, c = score(diarizer, conv)
                for key in tot:
                    tot[key] += comp[key]
                files += 1
                right += k == n
                if k != n:
                    misses.append(f"seed {seed}{' ov' if ov else ''}: {k}")
                audio_s, wall_s, cpu_s = audio_s + a, wall_s + w, cpu_s + c
        der = (tot["missed detection"] + tot["false alarm"] + tot["confusion"]) / tot["total"]
        rows.append({"speakers": n, "der": der, "count_acc": right / files, "rtf_wall": audio_s / wall_s,
                     "rtf_cpu": audio_s / (cpu_s / threads), "misses": misses})
        print(f"| {n} | {files} | {100 * der:.1f} % | {100 * tot['missed detection'] / tot['total']:.1f} % "
              f"| {100 * tot['false alarm'] / tot['total']:.1f} % | {100 * tot['confusion'] / tot['total']:.1f} % "
              f"| {right}/{files} | {audio_s / wall_s:.0f}x | {audio_s / (cpu_s / threads):.0f}x |")
    for r in rows:
        if r["misses"]:
            print(f"  count misses, {r['speakers']} speakers (seed: found): {', '.join(r['misses'])}")
    return rows


def threads_table(embedder, rounds=3):
    """Same file, torch on 1 and 2 threads, interleaved so neighbours' load hits both alike."""
    from diarize_offline import OfflineDiarizer

    conv = make_conversation(4, 0, CACHE, 60, True)
    audio = load_audio(conv.wav_path)
    ds = {t: OfflineDiarizer(threads=t, embedder=embedder) for t in (1, 2)}
    for d in ds.values():
        d(audio)  # warm-up
    wall = {1: 0.0, 2: 0.0}
    for _ in range(rounds):
        for t, d in ds.items():
            t0 = time.perf_counter()
            d(audio)
            wall[t] += time.perf_counter() - t0
    secs = rounds * audio.size / 16000
    print(f"\n## Torch threads (same 60 s file x{rounds}, interleaved)\n")
    print("| threads | x real time (wall) |\n|---|---|")
    for t in (1, 2):
        print(f"| {t} | {secs / wall[t]:.0f}x |")


def memory_child(minutes: float, threads: int, embedder: str) -> None:
    """Run in a fresh process: print JSON with baseline and peak RSS for one long conversation."""
    from diarize_offline import OfflineDiarizer

    conv = make_conversation(4, 100 + int(minutes), CACHE, minutes * 60.0, True)
    assert conv.wav_path.exists()
    d = OfflineDiarizer(threads=threads, embedder=embedder)
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's peak at fork time
    base = _hwm_mib()
    audio = load_audio(conv.wav_path)
    loaded = _rss_now_mib()
    peak_before = _hwm_mib()
    try:  # reset the kernel's peak-RSS mark so the diarization's own peak shows apart from loading
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    t0, c0 = time.perf_counter(), time.process_time()
    df = d(audio)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    during = _hwm_mib() if hwm_reset else float("nan")
    print(json.dumps({"minutes": minutes, "baseline_mib": base, "peak_mib": max(peak_before, _hwm_mib()),
                      "loaded_mib": loaded, "diarize_peak_mib": during,
                      "audio_mib": audio.nbytes / 2**20, "speakers_found": int(df.speaker.nunique()),
                      "rtf_wall": audio.size / 16000 / wall, "rtf_cpu": audio.size / 16000 / (cpu / threads)}))


def memory_table(threads, embedder, lengths=(10, 60)):
    print("\n## Memory (fresh process per length, 4 speakers with overlaps)\n")
    print("| audio | peak RSS (whole run) | models loaded | + audio read | peak while diarizing | diarizing minus "
          "loaded | audio array | speakers found (4) | x real time (wall) | x real time (CPU/threads) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for minutes in lengths:
        make_conversation(4, 100 + int(minutes), CACHE, minutes * 60.0, True)  # generate outside the child
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(minutes), "--threads", str(threads),
                              "--embedder", embedder], capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out.append(r)
        print(f"| {minutes} min | {r['peak_mib']:.0f} MiB | {r['baseline_mib']:.0f} MiB | {r['loaded_mib']:.0f} MiB "
              f"| {r['diarize_peak_mib']:.0f} MiB | {r['diarize_peak_mib'] - r['loaded_mib']:.0f} MiB "
              f"| {r['audio_mib']:.0f} MiB | {r['speakers_found']} | {r['rtf_wall']:.0f}x | {r['rtf_cpu']:.0f}x |")
    return out


def voice_embeddings(embedder, voices):
    """Two embeddings per voice (two different texts, about 15 s each)."""
    texts = (" ".join(_WORDS[:45]), " ".join(_WORDS[60:105]))
    out = []
    for v in voices:
        pair = []
        for t in texts:
            x = _synth(v, t)
            wins = [(0, s, s + 24000) for s in range(0, len(x) - 24000, 12000)]
            e = embedder.embed(x, [(0, len(x))], wins).mean(axis=0)
            pair.append(e / np.linalg.norm(e))
        out.append(pair)
    a = np.stack([p[0] for p in out])
    b = np.stack([p[1] for p in out])
    return (a @ b.T + b @ a.T) / 2  # diagonal: the same voice on two texts


def similarity_table(embedder, voices=VOICE_POOL):
    sim = voice_embeddings(embedder, voices)
    print(f"\n## Voice pool: cosine similarity of {embedder.name} embeddings (raw, no mean subtraction; "
          "diagonal = same voice, other text)\n")
    print("| | " + " | ".join(str(i) for i in range(len(voices))) + " |")
    print("|---" * (len(voices) + 1) + "|")
    for i, v in enumerate(voices):
        print(f"| {i} {v[0]} p{v[1]} s{v[2]} | " + " | ".join(f"{sim[i, j]:.2f}" for j in range(len(voices))) + " |")
    off = sim[~np.eye(len(voices), dtype=bool)]
    print(f"\nhighest between two pool voices: {off.max():.2f}; lowest same-voice: {np.diag(sim).min():.2f}")
    return sim


def select_voices(size=8):
    """Sweep candidate voices; greedily keep those whose embeddings stay apart (both models)."""
    from diarize_offline.embedders import CampplusEmbedder, ResemblyzerEmbedder

    bases = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp"]
    variants = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                "klatt3", "croak", "Alex", "Andy", "Annie", "john", "linda", "max", "michel", "paul", "robert",
                "steph", "Diogo", "Mario", "Storm", "Tweaky"]
    rng = np.random.default_rng(0)
    cands = [(f"{b}+{v}", int(rng.integers(20, 80)), int(rng.integers(150, 190)))
             for v in variants for b in rng.choice(bases, 2, replace=False)]
    sims = [voice_embeddings(E(), cands) for E in (ResemblyzerEmbedder, CampplusEmbedder)]
    s = np.maximum(*sims)
    np.fill_diagonal(s, -1)
    sel = [int(np.argmin(s.max(axis=1)))]
    while len(sel) < size:
        rest = [i for i in range(len(cands)) if i not in sel]
        best = min(rest, key=lambda i: s[i, sel].max())
        print(f"{cands[best]}  max similarity to the pool so far {s[best, sel].max():.2f}")
        sel.append(best)
    print("VOICE_POOL = [\n" + "".join(f"    {cands[i]!r},\n" for i in sel) + "]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the diarizer's default is 1)")
    ap.add_argument("--embedder", default="resemblyzer")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--memory-child", type=float)
    ap.add_argument("--select-voices", action="store_true")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    if a.memory_child:
        return memory_child(a.memory_child, a.threads, a.embedder)
    if a.select_voices:
        return select_voices()
    from diarize_offline import OfflineDiarizer

    if a.memory_only:
        return memory_table(a.threads, a.embedder)
    print(f"# Offline diarization ({a.embedder}), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    d = OfflineDiarizer(threads=a.threads, embedder=a.embedder)
    accuracy_table(d, list(range(a.seeds)), a.duration, a.threads)
    threads_table(a.embedder)
    similarity_table(d.embedder)
    if not a.no_memory:
        memory_table(a.threads, a.embedder)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
