"""Known speakers on real two-person speech: each speaker enrolled from one clip of a phone call, the share of the
rest of the call attributed to the right name.

    .venv-ml/bin/python bench/known_speakers.py [--threads 2] [--model base]

Audio: the real two-person phone call pyannote.audio's wheel ships (``pyannote/audio/sample``: 30 s, English,
Diane and Sheila, RTTM turns). Two folds, so that no second of speech is both enrolled and measured:

- fold A: Diane enrolled from 10.6-14.45 s, Sheila from 14.55-17.9 s; measured on 18.0-30.0 s;
- fold B: Diane enrolled from 18.6-21.7 s, Sheila from 21.8-28.4 s; measured on 0-18.0 s.

Each fold through the WhisperX server run from source on 127.0.0.1 (the model given, int8, ``--threads`` threads),
three ways: OpenAI's request (``known_speaker_names[]`` with ``known_speaker_references[]`` data URLs, on
``/v1/audio/transcriptions``, ``diarized_json``), the enrolled voices (``POST /v1/speakers``, then
``speakers=Diane,Sheila`` on ``/transcribe``), and plain diarization scored with the best one-to-one mapping of its
anonymous labels (the diarizer's own ceiling). Printed per fold and in all: the share of reference speech (outside
overlaps) whose time lies in a segment carrying the right name, the share of timed words whose speaker is the right
name, and each name's similarity; with only one speaker enrolled, whether the other stays anonymous.

Backends: the offline one (resemblyzer embeddings) runs here. The pyannote backend needs its gated model from the
HuggingFace hub (HF_TOKEN): ``--backend pyannote`` measures it where the hub is reachable.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

import numpy as np  # noqa: E402
import requests  # noqa: E402
import soundfile as sf  # noqa: E402

from diarized_transcripts import attribution_error, phone_call, words_of  # noqa: E402
from multilingual import Server  # noqa: E402

SR = 16000
NAMES = {"speaker90": "Diane", "speaker91": "Sheila"}
FOLDS = {
    "A": {"clips": {"Diane": (10.6, 14.45), "Sheila": (14.55, 17.9)}, "test": (18.0, 30.0)},
    "B": {"clips": {"Diane": (18.6, 21.7), "Sheila": (21.8, 28.4)}, "test": (0.0, 18.0)},
}


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def data_url(audio: np.ndarray) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio)).decode()


def cut(audio, a, b):
    return audio[int(a * SR):int(b * SR)]


def ref_turns(turns, a, b):
    """The reference turns inside [a, b], shifted to start at 0, named."""
    out = []
    for s, e, spk in turns:
        s, e = max(s, a), min(e, b)
        if e > s:
            out.append((s - a, e - a, NAMES.get(spk, spk)))
    return out


def speech_share(segments, turns, step=0.01) -> tuple[float, float]:
    """(share of reference speech, outside overlaps, inside a segment with the right speaker; share covered by any
    segment)."""
    right = covered = total = 0
    t_end = max(e for _, e, _ in turns)
    for i in range(int(t_end / step)):
        t = (i + 0.5) * step
        who = {r for a, b, r in turns if a <= t < b}
        if len(who) != 1:
            continue
        total += 1
        seg = next((s for s in segments if s["start"] <= t < s["end"]), None)
        if seg is not None:
            covered += 1
            right += seg.get("speaker") == next(iter(who))
    return right / max(total, 1), covered / max(total, 1)


def word_share(segments, turns) -> tuple[float, int]:
    """Share of words whose speaker is the reference's name at their middle (no label mapping)."""
    good = n = 0
    for t, spk in words_of(segments):
        who = {r for a, b, r in turns if a <= t <= b}
        if len(who) > 1:
            continue
        if not who:
            who = {min(turns, key=lambda x: max(x[0] - t, t - x[1]))[2]}
        n += 1
        good += spk == who.pop()
    return good / max(n, 1), n


def mapped(segments, turns) -> list[dict]:
    """Segments with their anonymous labels replaced by the best one-to-one mapping to the reference's names (the
    diarizer's own ceiling)."""
    err, _ = attribution_error(words_of(segments), turns)
    hyp = sorted({s["speaker"] for s in segments}, key=str)
    best, best_score = {}, -1.0
    import itertools
    names = sorted({r for _, _, r in turns})
    for perm in itertools.permutations(names + [None] * max(0, len(hyp) - len(names)), len(hyp)):
        m = dict(zip(hyp, perm))
        score = word_share([{**s, "speaker": m[s["speaker"]],
                             "words": [{**w, "speaker": m.get(w.get("speaker"))} for w in s.get("words") or []]}
                            for s in segments], turns)[0]
        if score > best_score:
            best, best_score = m, score
    return [{**s, "speaker": best[s["speaker"]],
             "words": [{**w, "speaker": best.get(w.get("speaker"))} for w in s.get("words") or []]} for s in segments]


def pipeline_seconds(url: str) -> dict:
    """stt_pipeline_seconds_total per phase from the server's /metrics (the requests so far, summed)."""
    out = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("stt_pipeline_seconds_total{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            out[phase] = round(float(line.rsplit(" ", 1)[1]), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=str(Path.home() / ".cache/whisper-platform/models/base"))
    ap.add_argument("--backend", default="offline", choices=("offline", "pyannote"))
    args = ap.parse_args()
    call = phone_call()
    audio, rate = sf.read(str(call.wav), dtype="float32")
    assert rate == SR, rate
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="bench-speakers-"))
    srv = Server("whisperx", Path(args.model), args.threads, work,
                 {"STT_DIARIZATION_BACKEND": args.backend, "STT_SPEAKERS_DIR": str(work / "speakers")})
    rows = []
    totals: dict = {}
    try:
        for fold, spec in FOLDS.items():
            a, b = spec["test"]
            test = work / f"test-{fold}.wav"
            test.write_bytes(wav_bytes(cut(audio, a, b)))
            turns = ref_turns(call.turns, a, b)
            clips = {n: cut(audio, *span) for n, span in spec["clips"].items()}
            for n in list(requests.get(srv.url + "/v1/speakers", timeout=10).json()["data"]):
                requests.delete(srv.url + f"/v1/speakers/{n['name']}", timeout=10)
            for n, c in clips.items():
                r = requests.post(srv.url + "/v1/speakers", data={"name": n},
                                  files={"file": (f"{n}.wav", wav_bytes(c))}, timeout=120)
                r.raise_for_status()

            def post(route, data, files=(), test=test):
                with open(test, "rb") as f:
                    r = requests.post(srv.url + route, data=data, files=[("file", (test.name, f)), *files],
                                      timeout=900)
                r.raise_for_status()
                return r.json()

            refs = [("known_speaker_names[]", n) for n in clips] + \
                [("known_speaker_references[]", data_url(c)) for c in clips.values()]
            by_refs = post("/transcribe", [("response_format", "json"), *refs])
            by_store = post("/transcribe", [("speakers", ",".join(clips))])
            plain = post("/transcribe", [("diarize", "true")])
            only_one = post("/transcribe", [("speakers", "Diane")])
            for how, body in (("references", by_refs), ("enrolled", by_store),
                              ("diarizer, best mapping", {**plain, "segments": mapped(plain["segments"], turns)})):
                share, cover = speech_share(body["segments"], turns)
                words, n = word_share(body["segments"], turns)
                known = (body.get("diarization") or {}).get("known_speakers") or {}
                sims = ", ".join(f"{k} {v['similarity']}" for k, v in known.items())
                rows.append((fold, how, share, words, n, cover, sims))

                t = totals.setdefault(how, [0.0, 0.0, 0, 0.0])
                dur = sum(e - s for s, e, _ in turns)
                t[0] += share * dur
                t[1] += words * n
                t[2] += n
                t[3] += dur
            sheila = {s["speaker"] for s in only_one["segments"]} - {"Diane"}
            phases = pipeline_seconds(srv.url)
            print(f"fold {fold}: seconds so far per phase {phases}")
            print(f"fold {fold}, only Diane enrolled: other labels {sorted(sheila)}; known_speakers "
                  f"{only_one['diarization']['known_speakers']}")
    finally:
        srv.stop()
    print("\n| fold | names from | speech with the right name | words with the right name | speech in a segment | "
          "similarity |\n| --- | --- | ---: | ---: | ---: | --- |")
    for fold, how, share, words, n, cover, sims in rows:
        print(f"| {fold} | {how} | {share:.1%} | {words:.1%} ({n}) | {cover:.1%} | {sims} |")
    for how, (s, w, n, d) in totals.items():
        print(f"| A+B | {how} | {s / d:.1%} | {w / max(n, 1):.1%} ({n}) | | |")


if __name__ == "__main__":
    main()
