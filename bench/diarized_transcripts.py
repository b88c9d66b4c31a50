"""Diarized transcripts against plain ones, and the WhisperX service against upstream whisperx's own pipeline.

    .venv-ml/bin/python bench/diarized_transcripts.py [--threads 2] [--reps 1] [--only phone,fr,meeting]

Audio, each with its reference transcript and speaker turns:
- ``phone``: the real two-person phone call pyannote.audio's wheel ships (``pyannote/audio/sample``: 30 s,
  English, RTTM turns and an STM transcript);
- ``fr``: the French dialogue (tests/support/neural_speech.py, Kokoro voices, four short turns);
- ``meeting``: a 10-minute two-person conversation (tests/support/synth_conversations.py, espeak-ng voices).

For each, through the WhisperX server run from source on 127.0.0.1 (``base``, int8, ``--threads`` threads, the
offline diarizer, no alignment model reachable here: words are timed by Whisper): plain (``diarize=false``),
diarized in the full-context order (``STT_DIARIZE_ORDER=words``: ASR over VAD chunks, speakers per word,
segments cut at speaker changes) and in the turn-first order (``turns``: ASR on each speaker turn). Printed:
WER against the reference, the diarized WER relative to the plain one, word attribution error (each timed word's
speaker against the reference speaker at its middle, after the best one-to-one mapping of labels; words in
overlapped speech left out), the diarizer's speaker confusion (pyannote.metrics, 0.25 s collar), x real time
(audio seconds per wall second of the HTTP request, and per CPU second / threads: neighbours on a shared machine
stretch wall time) and where the time went (the server's
``stt_pipeline_seconds_total`` per phase).

Side by side, in the same process as this script and alternating with the service's requests: upstream
whisperx's library pipeline as its README runs it (``load_model`` with the same model and threads,
``transcribe(batch_size=8)``, the offline diarizer, ``assign_word_speakers``; ``load_align_model`` cannot
download here, so no alignment on either side). The ratio service / library is the speed goal (<= 1.10).
Timings on a shared machine are noisy: read the ratios, measured in one run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "images" / "diarize"), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import requests  # noqa: E402

from multilingual import Server  # noqa: E402
from support.transcript_wer import wer  # noqa: E402

CACHE = Path(os.environ.get("WHISPER_SPEECH_CACHE") or Path.home() / ".cache/whisper-platform/speech") / "bench"


class Audio:
    def __init__(self, name, wav, language, text, turns):
        self.name, self.wav, self.language, self.text = name, Path(wav), language, text
        self.turns = sorted(turns)   # [(start, end, speaker)]

    @property
    def duration(self) -> float:
        import soundfile as sf
        return sf.info(str(self.wav)).duration


def phone_call() -> Audio:
    spec = importlib.util.find_spec("pyannote.audio") if importlib.util.find_spec("pyannote") else None
    if spec is not None:
        folder = Path(list(spec.submodule_search_locations)[0]) / "sample"
    else:   # run from the dev venv (bench/whisperx_cold_start.py --sandbox): the ML venv's copy
        folder = next(ROOT.glob(".venv-ml/lib/python3*/site-packages/pyannote/audio/sample"))
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        f = line.split()
        turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    rows = []
    for line in (folder / "sample.stm").read_text().splitlines():
        f = line.split(maxsplit=5)
        rows.append((float(f[3]), f[5]))
    return Audio("phone", folder / "sample.wav", "en", " ".join(t for _, t in sorted(rows)), turns)


def french_dialogue() -> Audio:
    from support import neural_speech
    conv = neural_speech.conversation(neural_speech.FRENCH_DIALOGUE)
    return Audio("fr", conv.wav, "fr", conv.text, [(a, b, v) for a, b, v, _ in conv.turns])


def meeting(minutes: float = 10.0) -> Audio:
    from support.synth_conversations import make_conversation
    conv = make_conversation(2, 11, CACHE / "synth", duration_s=minutes * 60.0)
    return Audio("meeting", conv.wav_path, "en", conv.text(), [(a, b, s) for a, b, s, _ in conv.turns])


# ---------------------------------------------------------------- scores

def words_of(segments) -> list:
    """(middle time, speaker) of each timed word; a segment without timed words counts its words spread evenly."""
    out = []
    for s in segments:
        ws = [w for w in s.get("words") or [] if w.get("start") is not None]
        if ws:
            out += [((w["start"] + w["end"]) / 2, w.get("speaker") or s.get("speaker")) for w in ws]
        else:
            n = max(1, len(s["text"].split()))
            out += [(s["start"] + (i + 0.5) * (s["end"] - s["start"]) / n, s.get("speaker")) for i in range(n)]
    return out


def attribution_error(words, ref_turns) -> tuple[float, int]:
    """Share of words whose speaker is not the reference's at their middle, after the best label mapping."""
    from scipy.optimize import linear_sum_assignment
    pairs = []
    for t, spk in words:
        inside = {r for a, b, r in ref_turns if a <= t <= b}
        if len(inside) > 1:
            continue   # overlapped speech: either is right
        if not inside:   # between turns: the nearest one's
            inside = {min(ref_turns, key=lambda x: max(x[0] - t, t - x[1]))[2]}
        pairs.append((spk, inside.pop()))
    if not pairs:
        return float("nan"), 0
    hyp = sorted({h for h, _ in pairs}, key=str)
    ref = sorted({r for _, r in pairs})
    m = np.zeros((len(hyp), len(ref)))
    for h, r in pairs:
        m[hyp.index(h), ref.index(r)] += 1
    rows, cols = linear_sum_assignment(-m)
    return 1.0 - m[rows, cols].sum() / len(pairs), len(pairs)


def confusion(df, ref_turns, duration) -> float:
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate
    ref, hyp = Annotation(), Annotation()
    for i, (a, b, s) in enumerate(ref_turns):
        ref[Segment(a, b), i] = s
    for i, r in enumerate(df.itertuples()):
        hyp[Segment(float(r.start), float(r.end)), i] = r.speaker
    comp = DiarizationErrorRate(collar=0.25)(ref, hyp, uem=Timeline([Segment(0, duration)]), detailed=True)
    return comp["confusion"] / comp["total"]


def phases(metrics_text: str) -> dict:
    out = {}
    for m in re.finditer(r'^stt_pipeline_seconds_total\{phase="([^"]+)"\} ([0-9.e+-]+)$', metrics_text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


# ---------------------------------------------------------------- the two pipelines

def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_request(srv, audio: Audio, diarize: bool) -> dict:
    before = phases(requests.get(srv.url + "/metrics", timeout=10).text)
    c0, t0 = cpu_seconds(srv.proc.pid), time.perf_counter()
    with open(audio.wav, "rb") as f:
        r = requests.post(srv.url + "/transcribe", files={"file": (audio.wav.name, f)},
                          data={"language": audio.language, "diarize": str(diarize).lower()}, timeout=1800)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(srv.proc.pid) - c0
    r.raise_for_status()
    after = phases(requests.get(srv.url + "/metrics", timeout=10).text)
    return {"body": r.json(), "wall": wall, "cpu": cpu,
            "phases": {k: after[k] - before.get(k, 0.0) for k in after}}


class Library:
    """Upstream whisperx as its README runs it, with the offline diarizer (pyannote's needs a hub download)."""

    def __init__(self, model: str, threads: int):
        import torch
        import whisperx
        from diarize_offline import OfflineDiarizer
        torch.set_num_threads(threads)
        self.whisperx, self.threads, self.model_path = whisperx, threads, model
        self.models, self.aligners = {}, {}
        self.diarizer = OfflineDiarizer(threads=threads)

    def run(self, audio: Audio) -> dict:
        wx = self.whisperx
        if audio.language not in self.models:
            self.models[audio.language] = wx.load_model(self.model_path, "cpu", compute_type="int8",
                                                        threads=self.threads, language=audio.language)
            try:
                self.aligners[audio.language] = wx.load_align_model(language_code=audio.language, device="cpu")
            except Exception:  # noqa: BLE001 - no download here: the library's result stays unaligned
                self.aligners[audio.language] = None
        model, aligner = self.models[audio.language], self.aligners[audio.language]
        t0, c0 = time.perf_counter(), time.process_time()
        samples = wx.load_audio(str(audio.wav))
        result = model.transcribe(samples, batch_size=8, language=audio.language)
        t_asr = time.perf_counter() - t0
        if aligner is not None:
            result = wx.align(result["segments"], aligner[0], aligner[1], samples, "cpu")
        t1 = time.perf_counter()
        df = self.diarizer(samples)
        t_diar = time.perf_counter() - t1
        result = wx.assign_word_speakers(df, result)
        return {"result": result, "df": df, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                "asr": t_asr, "diarize": t_diar}


def text_of(segments) -> str:
    return " ".join(s["text"].strip() for s in segments)


CONFIGS = {   # label: the server's environment
    "words, silero": {"STT_DIARIZE_ORDER": "words", "STT_VAD": "silero"},
    "turns, silero": {"STT_DIARIZE_ORDER": "turns", "STT_VAD": "silero"},
    "words, pyannote": {"STT_DIARIZE_ORDER": "words", "STT_VAD": "pyannote"},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="timed service/library pairs per audio (after a warm-up)")
    ap.add_argument("--only", default="phone,fr,meeting")
    ap.add_argument("--configs", default=";".join(CONFIGS), help="server configurations ('order, vad'), ';' between")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from sandbox.models import base
    model = base()
    makers = {"phone": phone_call, "fr": french_dialogue, "meeting": meeting}
    audios = [makers[n]() for n in a.only.split(",")]
    labels = [c.strip() for c in a.configs.split(";")]
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {a.threads} threads, model base; "
          + ", ".join(f"{x.name} {x.duration:.0f} s" for x in audios), flush=True)
    lib = Library(str(model), a.threads)
    rows, speed, spent = [], [], []
    for label in labels:
        srv = Server("whisperx", model, a.threads, model.parent, {**CONFIGS[label], "STT_DIARIZATION_BACKEND": "offline"})
        try:
            for audio in audios:
                dur = audio.duration
                service_request(srv, audio, True)   # warm-up: the language's tokenizer, the diarizer's first call
                plain = service_request(srv, audio, False)
                w_plain = wer(audio.text, text_of(plain["body"]["segments"]), audio.language)
                vad = label.split(", ")[1]
                if not any(r[0] == audio.name and r[1] == f"plain, {vad}" for r in rows):
                    rows.append((audio.name, f"plain, {vad}", w_plain, None, None, None, dur / plain["wall"],
                                 dur / (plain["cpu"] / a.threads)))
                pair = label.startswith("words")
                if pair and not speed:
                    lib.run(audio)   # warm-up
                walls, lib_walls, cpus, lib_cpus = [], [], [], []
                for _ in range(a.reps):
                    res = service_request(srv, audio, True)
                    walls.append(res["wall"])
                    cpus.append(res["cpu"])
                    if pair:
                        lr = lib.run(audio)
                        lib_walls.append(lr["wall"])
                        lib_cpus.append(lr["cpu"])
                segs = res["body"]["segments"]
                w = wer(audio.text, text_of(segs), audio.language)
                err, n = attribution_error(words_of(segs), audio.turns)
                rel = (w - w_plain) / w_plain if w_plain else float("nan")
                rows.append((audio.name, f"diarized, {label}", w, rel, err, n, dur / statistics.median(walls),
                             dur / (statistics.median(cpus) / a.threads)))
                spent.append((audio.name, label, dur, {**res["phases"], "request": res["wall"]}))
                print(json.dumps(rows[-1]), flush=True)
                if lib_walls:
                    lsegs = lr["result"]["segments"]
                    lw = wer(audio.text, text_of(lsegs), audio.language)
                    lerr, ln = attribution_error(words_of(lsegs), audio.turns)
                    if not any(r[0] == audio.name and r[1].startswith("library") for r in rows):
                        rows.append((audio.name, "library (whisperx + offline diarizer)", lw, None, lerr, ln,
                                     dur / statistics.median(lib_walls), dur / (statistics.median(lib_cpus) / a.threads)))
                    speed.append((audio.name, label, dur, statistics.median(walls), statistics.median(lib_walls),
                                  statistics.median(cpus), statistics.median(lib_cpus),
                                  confusion(lr["df"], audio.turns, dur)))
        finally:
            srv.stop()

    print("\n| audio | pipeline | WER | diarized vs plain | word attribution error (words) | x real time (wall) "
          "| x real time (CPU / threads) |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, mode, w, rel, err, n, x, xc in sorted(rows, key=lambda r: r[0]):
        print(f"| {name} | {mode} | {w:.3f} | {'' if rel is None else f'{rel:+.0%}'} "
              f"| {'' if err is None else f'{err:.3f} ({n})'} | {x:.1f}x | {xc:.1f}x |")
    print("\n| audio | service | seconds | service wall (s) | library wall (s) | service / library (wall) "
          "| service / library (CPU) | diarizer confusion |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, label, _dur, sv, lib_s, cpu, lib_cpu, conf in speed:
        print(f"| {name} | {label} | {dur:.0f} | {sv:.1f} | {lib_s:.1f} | {sv / lib_s:.2f} | {cpu / lib_cpu:.2f} "
              f"| {conf:.3f} |")
    print("\nWhere the time goes (server phases, seconds; the HTTP request's wall time last):\n")
    keys = sorted({k for *_, p in spent for k in p if k != "request"}) + ["request"]
    print("| audio | service | " + " | ".join(keys) + " |\n|" + " --- |" * (len(keys) + 2))
    for name, label, _dur, p in spent:
        print(f"| {name} | {label} | " + " | ".join(f"{p.get(k, 0.0):.1f}" for k in keys) + " |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
