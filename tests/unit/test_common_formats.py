"""stt_common output writers: OpenAI shapes, timestamps, speaker labels."""
import json

from stt_common import Segment, Transcript, Word, render_transcript, to_diarized_json, to_json, to_srt, to_text, \
    to_verbose_json, to_vtt

SEG_FIELDS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
              "no_speech_prob"}


def _t(speakers=False):
    segs = [
        Segment(0, 0.0, 1.5, " Hello there.", tokens=[1, 2], words=[Word(" Hello", 0.0, 0.6), Word(" there.", 0.6, 1.5)],
                speaker="SPEAKER_00" if speakers else None),
        Segment(1, 3661.25, 3662.0, " Bye.", seek=366100, words=[Word(" Bye.", 3661.25, 3662.0)],
                speaker="SPEAKER_01" if speakers else None),
    ]
    return Transcript(text="Hello there. Bye.", segments=segs, language="english", duration=3662.4)


def test_json_and_usage():
    assert to_json(_t()) == {"text": "Hello there. Bye.", "usage": {"type": "duration", "seconds": 3663}}


def test_verbose_json_shape():
    d = to_verbose_json(_t(), word_timestamps=True)
    assert d["task"] == "transcribe" and d["language"] == "english" and d["duration"] == 3662.4
    assert all(set(s) == SEG_FIELDS for s in d["segments"])
    assert [w["word"] for w in d["words"]] == [" Hello", " there.", " Bye."]
    assert set(d["words"][0]) == {"word", "start", "end"}
    assert "words" not in to_verbose_json(_t())
    only_words = to_verbose_json(_t(), word_timestamps=True, segment_timestamps=False)
    assert "segments" not in only_words and only_words["words"]


def test_srt_vtt_timestamps():
    srt = to_srt(_t())
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n")
    assert "2\n01:01:01,250 --> 01:01:02,000\nBye.\n" in srt
    vtt = to_vtt(_t())
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    assert "01:01:01.250 --> 01:01:02.000" in vtt


def test_speaker_labels():
    t = _t(speakers=True)
    assert to_text(t) == "[SPEAKER_00] Hello there.\n[SPEAKER_01] Bye.\n"
    assert "[SPEAKER_01] Bye." in to_srt(t) and "[SPEAKER_00] Hello there." in to_vtt(t)
    assert to_text(_t()) == "Hello there. Bye.\n"
    d = to_diarized_json(t)
    assert d["task"] == "transcribe" and d["segments"][1] == {
        "type": "transcript.text.segment", "id": "seg_1", "start": 3661.25, "end": 3662.0, "text": "Bye.",
        "speaker": "SPEAKER_01"}


def test_render_media_types():
    assert render_transcript(_t(), "text").media_type == "text/plain"
    assert render_transcript(_t(), "vtt").media_type == "text/vtt"
    body = json.loads(render_transcript(_t(), "verbose_json", word_timestamps=True).body)
    assert body["words"][2]["start"] == 3661.25
