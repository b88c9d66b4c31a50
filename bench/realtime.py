"""Live transcription (`/v1/realtime`), measured as a client lives it: one recording of known utterances streamed at
real-time pace with the openai SDK's realtime client, through nginx and the autostart proxy of the deployed sandbox
(or any server: --url), for each model.

    .venv/bin/python bench/realtime.py                          # the sandbox: tiny.en (English), base (French)
    .venv/bin/python bench/realtime.py --models base --sessions 1,2,3
    .venv/bin/python bench/realtime.py --models base --long --sessions 1   # French WER on 25 turns, not 8
    .venv/bin/python bench/realtime.py --url http://127.0.0.1:8001 --key sk-...   # a server run from source

Per model it prints:
1. end of an utterance to its `completed` event: median and p95 (goal <= 1.0 s, <= 2.0 s);
2. start of an utterance's speech to its first `delta` (goal <= 1.0 s);
3. WER of the completed items against the same audio sent as one file through the same path (goal: within 10 %,
   relative), and of the joined deltas;
4. N sessions streaming at once: completion latency against one session's, and the largest N whose median stays
   under twice one session's ("holds before latency doubles").
Timings on a shared 2-core machine are noisy: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ssl
import statistics
import sys
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support import neural_speech  # noqa: E402
from support.realtime_support import RATE, Recording, connect, recording, run_session, sdk_client, transcription_session  # noqa: E402
from support.transcript_wer import wer  # noqa: E402

ENGLISH = [("jm_kumo", "Good morning everyone."), ("jf_nezumi", "We are starting the meeting of the technical team."),
           ("jm_kumo", "The new transcription server works well."),
           ("jf_nezumi", "The results are saved every evening, and the report goes out on Monday."),
           ("jm_kumo", "Please send your questions before the end of the week."),
           ("jf_nezumi", "Thank you all, and see you tomorrow.")]
FRENCH = [(v, t) for v, t in neural_speech.FRENCH_DIALOGUE] + [
    ("jf_nezumi", "Bonjour à tous."), ("jm_kumo", "Nous commençons la réunion de l'équipe technique."),
    ("jf_nezumi", "Le nouveau serveur de transcription fonctionne bien, et les résultats sont enregistrés chaque soir."),
    ("jm_kumo", "Il fait beau aujourd'hui à Paris. Le train part de la gare à huit heures.")]
MODELS = {"tiny.en": ("en", ENGLISH), "base": ("fr", FRENCH)}
# --long: also a meeting's French turns (25 in all), for a WER that one word moves by 0.004
FRENCH_LONG = FRENCH + [(neural_speech.VOICES[i % 2], t) for i, t in enumerate(neural_speech.FRENCH_MEETING)]


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def build(model: str, long: bool = False) -> tuple[str, Recording]:
    language, lines = MODELS[model]
    if long and language == "fr":
        lines = FRENCH_LONG
    parts = [(neural_speech.speak(text, voice, lang="en-us" if language == "en" else "fr-fr"), text)
             for voice, text in lines]
    return language, recording(parts, gap=1.2)


def server_cpu(pid) -> float:
    """User + system CPU seconds of a process and its threads so far (0 without a pid)."""
    if not pid:
        return 0.0
    import psutil
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


class Target:
    def __init__(self, url: str | None, key: str | None):
        if url:
            self.base, self.key, self.ws, self.http = url.rstrip("/"), key or "not-needed", {"open_timeout": 300}, None
        else:
            from sandbox.client import HTTPS_PORT, base_url, certificate, http_client, secrets
            vhost = "whisper.sandbox.test"
            self.base, self.key = base_url(vhost), key or secrets()["WHISPER_API_KEY"]
            self.ws = {"ssl": ssl.create_default_context(cafile=str(certificate(vhost))), "host": "127.0.0.1",
                       "port": HTTPS_PORT, "proxy": None, "open_timeout": 300}
            self.http = http_client(vhost)

    async def session(self, rec: Recording, model: str, language: str, delay: float = 0.0):
        await asyncio.sleep(delay)
        client = sdk_client(self.base + "/v1", self.key)
        async with connect(client, websocket_connection_options=dict(self.ws)) as conn:
            await conn.session.update(session=transcription_session(model=model, language=language))
            return await run_session(conn, rec.pcm, pace=1.0, timeout=600)

    def file(self, rec: Recording, model: str, language: str) -> str:
        import openai
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(rec.pcm.tobytes())
        client = openai.OpenAI(base_url=self.base + "/v1", api_key=self.key, max_retries=0, timeout=600,
                               **({"http_client": self.http} if self.http else {}))
        return client.audio.transcriptions.create(file=("recording.wav", buf.getvalue()), model=model,
                                                  language=language).text


def timings(rec: Recording, result) -> tuple[list, list, int]:
    """(completion latencies, first-delta latencies, utterances without a completed item)."""
    items = [result.items[i] for i in result.order]
    done, first, missing = [], [], 0
    for start, end, _ in rec.utterances:
        covering = [it for it in items if it.started_ms is not None and it.stopped_ms is not None
                    and it.started_ms <= end * 1000 and it.stopped_ms >= start * 1000]
        last = [it for it in covering if it.completed_at is not None and it.stopped_ms >= end * 1000 - 50]
        if not last:
            missing += 1
            continue
        done.append(last[0].completed_at - end)
        deltas = [t for it in covering for t, _ in it.deltas if t >= start]
        if deltas:
            first.append(min(deltas) - start)
    return done, first, missing


async def concurrent(target: Target, rec: Recording, model: str, language: str, n: int):
    runs = await asyncio.gather(*(target.session(rec, model, language, delay=0.37 * i) for i in range(n)),
                                return_exceptions=True)
    lat, missing, errors = [], 0, 0
    for r in runs:
        if isinstance(r, BaseException) or r.of_type("error"):
            errors += 1
            continue
        d, _, m = timings(rec, r)
        lat += d
        missing += m
    return lat, missing, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a server's base URL (default: the sandbox through nginx and the proxy)")
    ap.add_argument("--key", help="its API key (default: the sandbox's)")
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--sessions", default="1,2,3,4", help="session counts streamed at once (the first is the base)")
    ap.add_argument("--long", action="store_true", help="French: 25 turns of a meeting (2 min) instead of 8")
    ap.add_argument("--server-pid", type=int, help="a local server's process: its CPU seconds per second of audio in "
                                                   "the one-session run (what an idle host's capacity follows from)")
    args = ap.parse_args()
    target = Target(args.url, args.key)
    rows, conc = [], []
    for model in args.models.split(","):
        language, rec = build(model, args.long)
        print(f"{model}: {len(rec.utterances)} utterances, {rec.seconds:.1f} s, load {load_average()}", flush=True)
        asyncio.run(target.session(rec.head(1), model, language))   # the model loaded, the service up
        cpu0 = server_cpu(args.server_pid)
        result = asyncio.run(target.session(rec, model, language))
        cpu = (server_cpu(args.server_pid) - cpu0) / rec.seconds if args.server_pid else None
        done, first, missing = timings(rec, result)
        file_text = target.file(rec, model, language)
        live_wer, file_wer = wer(rec.text, result.text, language), wer(rec.text, file_text, language)
        deltas_wer = wer(rec.text, " ".join(i.delta_text for i in result.completed), language)
        rows.append((model, language, rec, done, first, missing, live_wer, file_wer, deltas_wer, load_average(), cpu))
        short = rec.head(4)
        levels = []
        for n in [int(x) for x in args.sessions.split(",")]:
            lat, miss, errors = asyncio.run(concurrent(target, short, model, language, n))
            levels.append((n, lat, miss, errors, load_average()))
            print(f"  {n} sessions: median {statistics.median(lat) if lat else float('nan'):.2f} s, "
                  f"{miss} missed, {errors} refused/failed", flush=True)
        conc.append((model, levels))

    print(f"\n### Live transcription (`realtime.py`, {'the sandbox through nginx and the proxy' if not args.url else args.url})\n")
    print("| model (language) | audio | end of utterance -> completed: median / p95 | speech start -> first delta: "
          "median / p95 / share <= 1 s | WER live / file (relative) | WER of joined deltas | server CPU s per audio s "
          "| load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, language, rec, done, first, missing, live_wer, file_wer, deltas_wer, load, cpu in rows:
        share = sum(1 for f in first if f <= 1.0) / len(rec.utterances)
        rel = (live_wer / file_wer - 1) if file_wer else float("inf") if live_wer else 0.0
        print(f"| {model} ({language}) | {rec.seconds:.0f} s, {len(rec.utterances)} utterances"
              f"{f', {missing} missed' if missing else ''} | {statistics.median(done):.2f} s / {pct(done, 0.95):.2f} s "
              f"| {statistics.median(first):.2f} s / {pct(first, 0.95):.2f} s / {share:.0%} "
              f"| {live_wer:.3f} / {file_wer:.3f} ({rel:+.0%}) | {deltas_wer:.3f} | "
              f"{'-' if cpu is None else f'{cpu:.2f}'} | {load} |")
    print("\n| model | sessions at once | completion median / p95 | vs one session | missed / refused | load |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model, levels in conc:
        base = statistics.median(levels[0][1]) if levels[0][1] else float("nan")
        holds = 0
        for n, lat, miss, errors, load in levels:
            med = statistics.median(lat) if lat else float("nan")
            if lat and not errors and not miss and med <= 2 * base:
                holds = n
            print(f"| {model} | {n} | {med:.2f} s / {pct(lat, 0.95):.2f} s | {med / base:.2f}x | {miss} / {errors} "
                  f"| {load} |")
        print(f"| {model} | **holds {holds}** before the median doubles | | | | |")


if __name__ == "__main__":
    main()
