"""Speakers per word and segments cut at speaker changes (whisperx_server.speakers): turns in, labelled segments
out, no model."""
import pytest

np = pytest.importorskip("numpy", reason="numpy is needed by the engine")

from whisperx_server.speakers import (SpeakerTurns, assign_speakers, label_words,  # noqa: E402
                                      split_at_speaker_changes)

TURNS = SpeakerTurns([(0.0, 2.0, "SPEAKER_00"), (2.1, 4.0, "SPEAKER_01"), (6.0, 8.0, "SPEAKER_00")],
                     {"SPEAKER_00": [3.0, 4.0], "SPEAKER_01": [0.0, 2.0]})


def w(word, start, end):
    return {"word": word, "start": start, "end": end, "score": 0.9}


def test_speaker_of_a_span():
    assert TURNS.speaker_of(0.5, 1.0) == "SPEAKER_00"
    assert TURNS.speaker_of(1.8, 2.6) == "SPEAKER_01"     # most of it in the second turn
    assert TURNS.speaker_of(4.5, 4.7) == "SPEAKER_01"     # no overlap: the nearest turn (0.5 s away, not 1.3 s)
    assert TURNS.speaker_of(5.6, 5.8) == "SPEAKER_00"
    assert TURNS.speaker_of(3.0, 3.0) == "SPEAKER_01"     # a point in time
    assert SpeakerTurns([]).speaker_of(0, 1) is None
    assert TURNS.speakers == ["SPEAKER_00", "SPEAKER_01"]
    # one embedding per speaker cluster, L2-normalised
    assert np.allclose(TURNS.embeddings["SPEAKER_00"], [0.6, 0.8]) and np.allclose(TURNS.embeddings["SPEAKER_01"], [0, 1])


def test_a_segment_spanning_two_speakers_is_cut_between_their_words():
    seg = {"start": 0.2, "end": 3.9, "text": "Hello there. Hi, how are you?",
           "words": [w(" Hello", 0.2, 0.6), w(" there.", 0.7, 1.5), w(" Hi,", 2.3, 2.6), w(" how", 2.7, 2.9),
                     w(" are", 3.0, 3.2), w(" you?", 3.3, 3.9)]}
    out = assign_speakers([seg], TURNS)
    assert [(s["speaker"], s["text"], s["start"], s["end"]) for s in out] == [
        ("SPEAKER_00", "Hello there.", 0.2, 1.5), ("SPEAKER_01", "Hi, how are you?", 2.3, 3.9)]
    assert all(x["speaker"] == s["speaker"] for s in out for x in s["words"])
    assert seg["words"][0].get("speaker") is None      # the input is left as it was


def test_untimed_words_take_a_neighbours_speaker():
    seg = {"start": 2.2, "end": 7.5, "text": "Room 42 now ok",
           "words": [{"word": "Room"}, w("42", 2.5, 3.0), {"word": "now"}, w("ok", 6.5, 7.5)]}
    out = label_words([seg], TURNS)[0]
    assert [x["speaker"] for x in out["words"]] == ["SPEAKER_01", "SPEAKER_01", "SPEAKER_01", "SPEAKER_00"]
    parts = split_at_speaker_changes([out])
    assert [p["text"] for p in parts] == ["Room 42 now", "ok"]
    assert parts[0]["start"] == 2.5 and parts[1]["end"] == 7.5


def test_segment_without_words_takes_the_speaker_of_most_of_its_span():
    out = assign_speakers([{"start": 1.5, "end": 3.5, "text": "x"}], TURNS)
    assert assign_speakers([{"start": 1.5, "end": 3.5, "text": "x", "words": [w("x", 1.5, 1.9)]}], TURNS,
                           per_word=False)[0]["words"][0]["speaker"] == "SPEAKER_01"   # turn-first: the segment's
    assert out == [{"start": 1.5, "end": 3.5, "text": "x", "speaker": "SPEAKER_01", "words": []}]


def test_one_word_flicker_can_be_absorbed():
    words = [w("a", 0.1, 0.3), w("b", 0.4, 0.6), w("c", 2.2, 2.3), w("d", 6.1, 6.3), w("e", 6.4, 6.6)]
    seg = label_words([{"start": 0.1, "end": 6.6, "text": "a b c d e", "words": words}], TURNS)
    assert len(split_at_speaker_changes(seg)) == 3
    merged = split_at_speaker_changes(label_words(seg, TURNS), min_words=2)
    assert [p["text"] for p in merged] == ["a b c d e"] and merged[0]["speaker"] == "SPEAKER_00"
