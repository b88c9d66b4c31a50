"""Known speakers without a model: voices naming clusters (best pairs first, one to one, the threshold), names and
similarities laid on segments and words, the request's fields (OpenAI's names, data URLs, their bounds), the
per-caller store of enrolled voices (embeddings only, atomic files, deletion)."""
import base64
import io
import json
import math
import os
import struct
import wave

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="fastapi is needed by the server")
pytest.importorskip("av", reason="PyAV decodes the reference clips")

from stt_common import APIError  # noqa: E402

from whisperx_server.forms import openai_model_and_diarize, wants_diarization  # noqa: E402
from whisperx_server.segments import public_segment  # noqa: E402
from whisperx_server.voice_fields import check_name, decode_reference, parse_voice_fields  # noqa: E402
from whisperx_server.voice_store import VoiceStore  # noqa: E402
from whisperx_server.voices import Voice, apply_names, mean_vector, name_clusters  # noqa: E402


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


ALICE, BOB, CAROL = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)


def voice(name, vec, embedder="offline:resemblyzer"):
    return Voice(name, vec, embedder)


# ---------------------------------------------------------------- naming clusters

def test_best_pairs_first_one_name_per_cluster():
    clusters = {"SPEAKER_00": unit(0.9, 0.4, 0), "SPEAKER_01": unit(0.95, 0.1, 0), "SPEAKER_02": unit(0, 0, 1)}
    n = name_clusters(clusters, [voice("Alice", ALICE), voice("Bob", BOB)], threshold=0.3)
    # SPEAKER_01 is closest to Alice; SPEAKER_00, second closest to Alice, takes Bob (above the threshold)
    assert n.names == {"SPEAKER_01": "Alice", "SPEAKER_00": "Bob"}
    assert n.found == {"Alice": "SPEAKER_01", "Bob": "SPEAKER_00"}
    assert "SPEAKER_02" not in n.names and n.similarity["SPEAKER_02"] == pytest.approx(0.0, abs=1e-6)


def test_below_the_threshold_stays_anonymous():
    clusters = {"SPEAKER_00": unit(1, 0.2, 0), "SPEAKER_01": unit(0.1, 0.2, 1)}
    n = name_clusters(clusters, [voice("Alice", ALICE), voice("Bob", BOB)], threshold=0.9)
    assert n.names == {"SPEAKER_00": "Alice"}
    assert n.found["Bob"] is None
    summary = n.summary([voice("Alice", ALICE), voice("Bob", BOB)])
    assert summary["Bob"] == {"source": "reference", "speaker_label": None, "similarity": None}
    assert summary["Alice"]["speaker_label"] == "SPEAKER_00" and summary["Alice"]["similarity"] > 0.9


def test_no_clusters_or_no_voices():
    assert name_clusters({}, [voice("Alice", ALICE)], 0.5).names == {}
    assert name_clusters({"SPEAKER_00": ALICE}, [], 0.5).names == {}


def test_names_and_similarities_on_segments_and_words():
    segments = [
        {"start": 0.0, "end": 2.0, "text": "hi", "speaker": "SPEAKER_00",
         "words": [{"word": "hi", "start": 0.0, "end": 2.0, "speaker": "SPEAKER_00"}]},
        {"start": 2.0, "end": 4.0, "text": "yo", "speaker": "SPEAKER_01",
         "words": [{"word": "yo", "start": 2.0, "end": 4.0, "speaker": "SPEAKER_01"}]},
        {"start": 4.0, "end": 4.1, "text": "ok", "speaker": "SPEAKER_00", "words": []},
    ]
    voices = [voice("Alice", ALICE), voice("Bob", BOB)]
    n = name_clusters({"SPEAKER_00": unit(1, 0.1, 0), "SPEAKER_01": unit(0, 0.2, 1)}, voices, threshold=0.8)
    out = apply_names(segments, n, voices, [unit(1, 1, 0), unit(0, 0.5, 1), None])
    assert [s["speaker"] for s in out] == ["Alice", "SPEAKER_01", "Alice"]
    assert out[0]["words"][0]["speaker"] == "Alice" and out[1]["words"][0]["speaker"] == "SPEAKER_01"
    assert out[0]["speaker_similarity"] == pytest.approx(math.sqrt(0.5), abs=1e-3)   # its own vector vs Alice
    assert out[1]["speaker_similarity"] == pytest.approx(0.447, abs=1e-3)            # anonymous: closest voice (Bob)
    assert out[2]["speaker_similarity"] == pytest.approx(n.similarity["SPEAKER_00"], abs=1e-3)   # too short: cluster's
    assert segments[0]["speaker"] == "SPEAKER_00"   # the input is left as it was
    assert public_segment(out[0], True)["speaker_similarity"] == out[0]["speaker_similarity"]
    assert "speaker_similarity" not in public_segment(segments[0], True)


def test_voice_travels_as_json_and_means_are_weighted():
    v = Voice("Zoé", unit(3, 4, 0), "pyannote:m", source="enrolled")
    back = Voice.from_param(json.loads(json.dumps(v.as_param())))
    assert back.name == "Zoé" and back.embedder == "pyannote:m" and back.source == "enrolled"
    assert np.allclose(back.vector, [0.6, 0.8, 0.0], atol=1e-5)
    m = mean_vector([(ALICE, 3.0), (BOB, 1.0)])
    assert np.allclose(m, unit(3, 1, 0), atol=1e-5)


# ---------------------------------------------------------------- the request's fields

def wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(i / 7))) for i in range(int(seconds * rate))))
    return buf.getvalue()


def data_url(raw: bytes, media: str = "audio/wav") -> str:
    return f"data:{media};base64," + base64.b64encode(raw).decode()


def refused(fn, *args, status=400, code=None, param=None):
    with pytest.raises(APIError) as e:
        fn(*args)
    assert e.value.status == status, e.value.message
    if code:
        assert e.value.code == code, e.value.message
    if param:
        assert e.value.param == param
    return e.value


def test_openai_fields_parse_in_pairs():
    clip = data_url(wav(3.0))
    v = parse_voice_fields({"known_speaker_names[]": ["Alice", "Bob"], "known_speaker_references[]": [clip, clip],
                            "speakers": ["Carol, Dan"], "speaker_threshold": ["0.7"]})
    assert v.names == ["Alice", "Bob", "Carol", "Dan"] and v.enrolled == ["Carol", "Dan"]
    assert len(v.clips) == 2 and abs(len(v.clips[0][1]) / 16000 - 3.0) < 0.01 and v.threshold == 0.7
    assert not parse_voice_fields({"diarize": ["true"]})
    refused(parse_voice_fields, {"known_speaker_names[]": ["Alice"]}, code="invalid_speaker_reference")
    refused(parse_voice_fields, {"known_speaker_names[]": ["A", "B", "C", "D", "E"],
                                 "known_speaker_references[]": [clip] * 5}, code="too_many_speakers")
    refused(parse_voice_fields, {"speakers": ["Alice,alice"]}, code="invalid_speaker_name")
    refused(parse_voice_fields, {"speaker_threshold": ["1.5"]}, param="speaker_threshold")


def test_names_a_user_would_choose():
    assert check_name("  Émilie D'Arc-Dupont  ", "p") == "Émilie D'Arc-Dupont"
    for bad in ("", "a" * 65, "SPEAKER_00", "speaker_01", "x/y", "a\nb", "<b>"):
        refused(check_name, bad, "p", code="invalid_speaker_name")


def test_reference_clips_are_checked():
    assert abs(len(decode_reference(data_url(wav(2.5, 8000)), "A")) / 16000 - 2.5) < 0.01   # resampled to 16 kHz
    assert len(decode_reference(data_url(wav(10.0)), "A")) == 160000
    refused(decode_reference, "https://example.org/a.wav", "A", code="invalid_speaker_reference")
    refused(decode_reference, data_url(wav(3), "text/html"), "A", code="invalid_speaker_reference")
    refused(decode_reference, "data:audio/wav," + "abc", "A", code="invalid_speaker_reference")    # not base64
    e = refused(decode_reference, data_url(wav(1.0)), "A", code="invalid_speaker_reference")
    assert "2 to 10 s" in e.message
    e = refused(decode_reference, data_url(wav(12.0)), "A", code="invalid_speaker_reference")
    assert "longer than 10 s" in e.message
    refused(decode_reference, data_url(b"RIFF not audio at all" * 10), "A", code="invalid_speaker_reference")


def test_known_speakers_imply_diarization():
    assert wants_diarization({}, True, False) is True
    assert wants_diarization({}, False, False) is False
    refused(wants_diarization, {"diarize": ["false"]}, True, False, param="diarize")

    class Form:
        model, response_format = "whisper-1", "json"
    assert openai_model_and_diarize(Form(), {}, True) == (None, True)
    assert openai_model_and_diarize(Form(), {}, False) == (None, False)


# ---------------------------------------------------------------- the store

def test_store_per_caller_embeddings_only(tmp_path):
    s = VoiceStore(str(tmp_path / "voices"), max_voices=2)
    body, created = s.enroll("key-a", "Alice", {"offline:resemblyzer": (ALICE, 4.0), "pyannote:m": (BOB, 4.0)}, 1)
    assert created and body["name"] == "Alice" and body["clips"] == 1
    assert body["embedders"] == ["offline:resemblyzer", "pyannote:m"]
    assert s.list("key-b") == []                      # another caller sees nothing
    refused(s.get, "key-b", "Alice", status=404, code="speaker_not_found")
    assert s.get("key-a", "alice")["name"] == "Alice"   # names match without case
    files = [f for f in os.listdir(tmp_path / "voices") if f.endswith(".json")]
    assert len(files) == 1 and "key-a" not in files[0]
    path = tmp_path / "voices" / files[0]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    stored = json.loads(path.read_text())
    assert set(stored["voices"]["Alice"]) == {"name", "created_at", "updated_at", "clips", "speech_seconds",
                                              "embeddings", "weights"}   # nothing of the audio


def test_store_conflicts_append_and_limits(tmp_path):
    s = VoiceStore(str(tmp_path), max_voices=2)
    s.enroll("k", "Alice", {"offline:resemblyzer": (ALICE, 3.0)}, 1)
    refused(s.enroll, "k", "alice", {"offline:resemblyzer": (BOB, 3.0)}, 1, status=409, code="speaker_exists")
    body, created = s.enroll("k", "alice", {"offline:resemblyzer": (BOB, 1.0)}, 2, True)
    assert not created and body["name"] == "Alice" and body["clips"] == 3 and body["speech_seconds"] == 4.0
    [v] = s.voices("k", ["ALICE"], "offline:resemblyzer")
    assert v.name == "Alice" and v.source == "enrolled" and np.allclose(v.vector, unit(3, 1, 0), atol=1e-4)
    s.enroll("k", "Bob", {"offline:resemblyzer": (BOB, 3.0)}, 1)
    refused(s.enroll, "k", "Carol", {"offline:resemblyzer": (CAROL, 3.0)}, 1, code="too_many_speakers")
    refused(s.voices, "k", ["Dan"], "offline:resemblyzer", code="speaker_not_found", param="speakers")
    refused(s.voices, "k", ["Bob"], "pyannote:m", status=409, code="speaker_model_mismatch")


def test_delete_removes_the_voice_and_the_last_one_the_file(tmp_path):
    s = VoiceStore(str(tmp_path))
    s.enroll("k", "Alice", {"offline:resemblyzer": (ALICE, 3.0)}, 1)
    s.enroll("k", "Bob", {"offline:resemblyzer": (BOB, 3.0)}, 1)
    assert s.delete("k", "alice") == {"object": "speaker", "name": "Alice", "deleted": True}
    assert [v["name"] for v in s.list("k")] == ["Bob"]
    assert "Alice" not in "".join(p.read_text() for p in tmp_path.glob("*.json"))
    refused(s.delete, "k", "Alice", status=404)
    s.delete("k", "Bob")
    assert not list(tmp_path.glob("*.json"))


def test_store_off_says_so():
    refused(VoiceStore("").list, "k", status=503, code="speakers_unavailable")
