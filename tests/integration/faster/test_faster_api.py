"""The faster-whisper server through the real `openai` SDK: every format, words, SSE, translations, models, WER."""
import threading
import time

import httpx
import pytest

from support.transcript_wer import wer

from .conftest import FORMATS

SEG_FIELDS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
              "no_speech_prob"}
MAX_WER = 0.25  # tiny.en on espeak-ng's synthetic voice


def transcribe(client, path, **kw):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_wer_in_every_container(client, speech, fmt):
    r = transcribe(client, speech[fmt])
    assert wer(speech["text"], r.text) <= MAX_WER, r.text


def test_text_srt_vtt(client, speech):
    text = transcribe(client, speech["wav"], response_format="text")
    assert isinstance(text, str) and wer(speech["text"], text) <= MAX_WER
    srt = transcribe(client, speech["wav"], response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    vtt = transcribe(client, speech["wav"], response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and "-->" in vtt


def test_verbose_json_segments_and_words(client, speech):
    r = transcribe(client, speech["flac"], response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert r.language == "english" and r.duration > 5
    assert wer(speech["text"], r.text) <= MAX_WER
    raw = r.model_dump()
    assert raw["task"] == "transcribe"
    assert raw["segments"] and all(SEG_FIELDS <= set(s) for s in raw["segments"])
    words = r.words
    assert len(words) >= 25
    prev_start = 0.0
    for w in words:
        assert 0 <= w.start <= w.end <= r.duration + 0.01
        assert w.start >= prev_start - 1e-6
        prev_start = w.start
    seg = r.segments[0]
    assert seg.start < seg.end and seg.tokens and -5 < seg.avg_logprob <= 0


def test_word_only_verbose_json(client, speech):
    r = transcribe(client, speech["wav"], response_format="verbose_json", timestamp_granularities=["word"])
    assert r.words and not r.segments


def test_sse_stream(client, speech):
    with open(speech["mp3"], "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert "".join(e.delta for e in events[:-1]).strip() == events[-1].text
    assert wer(speech["text"], events[-1].text) <= MAX_WER


def test_translations(client, speech):
    with open(speech["ogg"], "rb") as f:
        r = client.audio.translations.create(model="whisper-1", file=f)
    assert wer(speech["text"], r.text) <= MAX_WER
    with open(speech["wav"], "rb") as f:
        v = client.audio.translations.create(model="whisper-1", file=f, response_format="verbose_json")
    assert v.model_dump()["task"] == "translate" and v.segments


def test_prompt_language_temperature(client, speech):
    r = transcribe(client, speech["wav"], language="en", prompt="A test of a speech server.", temperature=0.2)
    assert wer(speech["text"], r.text) <= MAX_WER


def test_models(client, server):
    ids = {m.id: m for m in client.models.list()}
    assert "whisper-1" in ids and ids["whisper-1"].model_dump()["loaded"] is True
    assert "tiny.en" not in ids  # catalogue names are downloads: off unless STT_ALLOW_MODEL_DOWNLOADS
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    import openai
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert "whisper-1" in e.value.body["message"]


def test_docs_metrics_and_responsive_health_during_long_job(server, speech):
    assert httpx.get(server.url + "/docs").status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/audio/transcriptions" in spec["paths"] and "/v1/audio/translations" in spec["paths"]
    result = {}

    def long_job():
        with open(speech["long"], "rb") as f:
            result["r"] = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": f},
                                     data={"response_format": "verbose_json"}, timeout=300)

    t = threading.Thread(target=long_job)
    t.start()
    time.sleep(1.0)
    worst = 0.0
    while t.is_alive():
        t0 = time.perf_counter()
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.2)
    t.join()
    r = result["r"]
    assert r.status_code == 200 and r.json()["duration"] > 50
    assert r.json()["segments"][-1]["end"] <= r.json()["duration"] + 0.01
    assert worst < 1.0, f"/health took {worst:.2f}s during a transcription"
    m = httpx.get(server.url + "/metrics").text
    audio = [line for line in m.splitlines() if line.startswith('stt_audio_seconds_total{task="transcribe"}')]
    assert audio and float(audio[0].split()[-1]) > 50
    assert 'stt_model_loads_total{model=' in m and 'result="ok"' in m
    assert not list(server.tmp_dir.iterdir()), "upload temp files left behind"


def test_long_audio_takes_the_batched_pipeline_with_complete_output(client, speech):
    """About 80 s: over STT_BATCH_MIN_SECONDS, so the default batched decoder answers; its output must be as
    complete as the sequential one's (every verbose_json field, words in order inside the duration)."""
    r = transcribe(client, speech["long"], response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert r.duration > 60
    assert wer(" ".join([speech["text"]] * 6), r.text) <= MAX_WER, r.text
    raw = r.model_dump()
    assert raw["segments"] and all(SEG_FIELDS <= set(s) for s in raw["segments"])
    starts = [s.start for s in r.segments]
    assert starts == sorted(starts) and r.segments[-1].end <= r.duration + 0.01
    assert r.segments[-1].end > 50, "the last minute is missing"
    assert max(s.end - s.start for s in r.segments) < 15, "segments must stay subtitle-sized"
    # every repeat's sentences, the one that ends a 30 s window too: one segment per sentence
    assert sum(s.text.rstrip().endswith(".") for s in r.segments) >= 6 * 3 - 2, [s.text for s in r.segments]
    prev = 0.0
    for w in r.words:
        assert prev - 1e-6 <= w.start <= w.end <= r.duration + 0.01
        prev = w.start
    assert len(r.words) >= 6 * 25
