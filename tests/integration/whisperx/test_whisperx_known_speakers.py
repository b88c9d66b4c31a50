"""Known speakers on real speech: the two-person phone call pyannote.audio's wheel ships (Diane and Sheila, RTTM
turns), the offline diarization backend, the tiny.en model.

- OpenAI's request shape through the openai SDK: known_speaker_names / known_speaker_references (data URLs),
  diarized_json, the similarity in each segment;
- an enrolled voice (POST /v1/speakers, one clip) found by name in a longer recording it was not cut from, the
  other voice left anonymous, a voice that is not in the recording found nowhere;
- the store per caller, deletion, and the errors a user meets (a short clip, an unknown name, diarize=false, two
  3.4 s clips as a new user sends them, which the 64 KiB field budget refused before);
- a job carrying known speakers to its worker (vectors only).
"""
from __future__ import annotations

import base64
import importlib.util
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from support.jobs_support import Worker, needs_redis, wait_finished

sf = pytest.importorskip("soundfile")

SR = 16000
DIANE_CLIP = (18.6, 21.7)      # Diane alone: "I'm originally from Chicago also. I'm in New Jersey now though."
SHEILA_CLIP = (21.8, 28.4)     # Sheila alone: "Well, there isn't that much difference. At least you know ..."
FIRST_PART = (0.0, 18.0)       # neither clip: "This is Diane in New Jersey." / "And I'm Sheila in Texas ..."


@pytest.fixture(scope="module")
def call():
    spec = importlib.util.find_spec("pyannote.audio") if importlib.util.find_spec("pyannote") else None
    if spec is None:
        pytest.skip("pyannote.audio (it ships the phone call) is not installed")
    audio, rate = sf.read(str(Path(list(spec.submodule_search_locations)[0]) / "sample" / "sample.wav"),
                          dtype="float32")
    assert rate == SR
    return audio


def wav(audio, rate=SR, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def cut(audio, span):
    return audio[int(span[0] * SR):int(span[1] * SR)]


def data_url(raw: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def first_part(call, tmp_path_factory):
    path = tmp_path_factory.mktemp("calls") / "first-part.wav"
    path.write_bytes(wav(cut(call, FIRST_PART)))
    return path


def segment_with(segments, words):
    return next(s for s in segments if all(w in s["text"].lower() for w in words))


def enroll(srv, name, raw: bytes, key="k1", **data):
    return requests.post(srv.url + "/v1/speakers", data={"name": name, **data}, files=[("file", ("c.wav", raw))],
                         headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_openai_sdk_known_speakers(server, call, first_part):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="k-sdk", base_url=server.url + "/v1", max_retries=0, timeout=300)
    with open(first_part, "rb") as f:
        t = client.audio.transcriptions.create(
            file=f, model="gpt-4o-transcribe-diarize", response_format="diarized_json", chunking_strategy="auto",
            known_speaker_names=["Diane", "Sheila"],
            known_speaker_references=[data_url(wav(cut(call, DIANE_CLIP))), data_url(wav(cut(call, SHEILA_CLIP)))])
    segments = [s.model_dump() for s in t.segments]
    assert {s["speaker"] for s in segments} == {"Diane", "Sheila"}, segments
    assert segment_with(segments, ["diane", "jersey"])["speaker"] == "Diane"
    assert segment_with(segments, ["texas"])["speaker"] == "Sheila"
    assert all(0.0 < s["speaker_similarity"] <= 1.0 for s in segments)   # our addition, kept by the SDK's model
    assert t.text and t.duration == pytest.approx(18.0, abs=0.1)


def test_enrolled_voice_found_by_name_and_the_other_left_anonymous(server, call, first_part, tmp_path):
    r = enroll(server, "Diane", wav(cut(call, DIANE_CLIP)))
    assert r.status_code == 201, r.text
    assert r.json()["clips"] == 1 and r.json()["embedders"] == ["offline:resemblyzer"]
    # a voice that is not in the call
    robot = tmp_path / "robot.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(robot),
                    "Good morning, this is a voice that nobody on that phone call has."], check=True)
    assert enroll(server, "Robot", robot.read_bytes()).status_code == 201
    with open(first_part, "rb") as f:
        r = requests.post(server.url + "/transcribe", files={"file": f}, data={"speakers": "Diane"},
                          headers={"Authorization": "Bearer k1"}, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    known = body["diarization"]["known_speakers"]
    assert known["Diane"]["source"] == "enrolled" and known["Diane"]["speaker_label"].startswith("SPEAKER_")
    assert body["diarization"]["speaker_threshold"] == pytest.approx(0.86)
    assert segment_with(body["segments"], ["diane", "jersey"])["speaker"] == "Diane"
    sheila = segment_with(body["segments"], ["texas"])
    assert sheila["speaker"].startswith("SPEAKER_") and sheila["speaker_similarity"] < 0.86   # anonymous
    assert "Diane" in body["diarization"]["speakers"]
    words = [w for s in body["segments"] for w in s["words"] if "jersey" in w["word"].lower()]
    assert words and words[0]["speaker"] == "Diane"
    # the stranger's voice matches no one
    with open(first_part, "rb") as f:
        r = requests.post(server.url + "/transcribe", files={"file": f}, data={"speakers": "Robot"},
                          headers={"Authorization": "Bearer k1"}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["diarization"]["known_speakers"]["Robot"]["speaker_label"] is None
    assert all(s["speaker"].startswith("SPEAKER_") for s in r.json()["segments"])


def test_store_per_caller_and_deletion(server, call):
    raw = wav(cut(call, DIANE_CLIP))
    assert enroll(server, "Zoé", raw, key="k2").status_code == 201
    r = enroll(server, "zoé", raw, key="k2")
    assert r.status_code == 409 and r.json()["error"]["code"] == "speaker_exists"
    r = enroll(server, "zoé", raw, key="k2", append="true")
    assert r.status_code == 200 and r.json()["clips"] == 2
    other = requests.get(server.url + "/v1/speakers", headers={"Authorization": "Bearer k3"}, timeout=10).json()
    assert all(v["name"] != "Zoé" for v in other["data"])
    mine = requests.get(server.url + "/v1/speakers", headers={"Authorization": "Bearer k2"}, timeout=10).json()
    assert [v["name"] for v in mine["data"]] == ["Zoé"]
    assert requests.delete(server.url + "/v1/speakers/Zo%C3%A9", headers={"Authorization": "Bearer k3"},
                           timeout=10).status_code == 404
    r = requests.delete(server.url + "/v1/speakers/Zo%C3%A9", headers={"Authorization": "Bearer k2"}, timeout=10)
    assert r.status_code == 200 and r.json()["deleted"] is True
    r = requests.post(server.url + "/transcribe", files={"file": ("a.wav", raw)}, data={"speakers": "Zoé"},
                      headers={"Authorization": "Bearer k2"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "speaker_not_found"


def test_errors_a_user_meets(server, call, first_part):
    # a new user's clip: 3.4 s of 16-bit stereo WAV at 44.1 kHz, 600 KB, 730 KB as a data URL
    piece = cut(call, DIANE_CLIP)[: int(3.4 * SR)]
    mono44 = np.interp(np.arange(0, len(piece), SR / 44100), np.arange(len(piece)), piece).astype("float32")
    clip44 = data_url(wav(np.stack([mono44, mono44], axis=1), 44100))
    assert len(clip44) > 10 * 64 * 1024   # ten times the budget all other fields share

    def post(data, path=first_part):
        with open(path, "rb") as f:
            return requests.post(server.url + "/v1/audio/transcriptions", files={"file": f}, data=data, timeout=300)

    # two 3.4 s clips as data URLs: accepted (the field budget answered 413 to this)
    r = post({"known_speaker_names[]": ["Diane", "Sheila"], "response_format": "diarized_json",
              "known_speaker_references[]": [clip44, data_url(wav(cut(call, SHEILA_CLIP)))]})
    assert r.status_code == 200, r.text
    assert {s["speaker"] for s in r.json()["segments"]} <= {"Diane", "Sheila"} | {f"SPEAKER_0{i}" for i in range(4)}
    for data, code in (
            ({"known_speaker_names[]": "Diane", "known_speaker_references[]": data_url(wav(call[:SR]))},
             "invalid_speaker_reference"),                                  # 1 s: too short
            ({"known_speaker_names[]": "Diane"}, "invalid_speaker_reference"),   # no clip
            ({"speakers": "Nobody"}, "speaker_not_found"),
            ({"speakers": "SPEAKER_00"}, "invalid_speaker_name"),
            ({"speakers": "Diane", "diarize": "false"}, "invalid_value")):
        r = post(data)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (data, r.text)
    r = post({"known_speaker_names[]": "Diane", "known_speaker_references[]": "data:audio/wav;base64," + "A" * (5 << 20)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "field_too_large", r.text


@needs_redis
def test_job_carries_known_speakers(start_server, redis_server, tiny_model, call, first_part, tmp_path):
    env = {**redis_server.jobs_env(tmp_path / "jobs"), "STT_SPEAKERS_DIR": str(tmp_path / "speakers")}
    (tmp_path / "jobs").mkdir()
    api = start_server("jobs-speakers", **env)
    assert enroll(api, "Diane", wav(cut(call, DIANE_CLIP))).status_code == 201
    with open(first_part, "rb") as f:
        r = requests.post(api.url + "/v1/jobs", files={"file": f}, timeout=60, headers={"Authorization": "Bearer k1"},
                          data={"speakers": "Diane", "known_speaker_names[]": "Sheila", "response_format": "json",
                                "known_speaker_references[]": data_url(wav(cut(call, SHEILA_CLIP)))})
    assert r.status_code == 202, r.text
    job = r.json()
    worker = Worker(tmp_path, {"STT_MODEL": tiny_model, "STT_MODELS_DIR": str(tmp_path), **env}, "whisperx")
    try:
        status = wait_finished(api.url, job, 240, headers={"Authorization": "Bearer k1"})
        assert status["status"] == "succeeded", (status, worker.logs())
        body = requests.get(api.url + status["result_url"], headers={"Authorization": "Bearer k1"}, timeout=10).json()
        assert segment_with(body["segments"], ["diane", "jersey"])["speaker"] == "Diane"
        assert segment_with(body["segments"], ["texas"])["speaker"] == "Sheila"
        assert body["diarization"]["known_speakers"]["Sheila"]["source"] == "reference"
    finally:
        worker.stop()


def test_pyannote_embedding_model_plumbing(call):
    """The pyannote backend's side: its pipeline's embedding model (pyannote.audio's own inference class around
    WeSpeaker's ResNet34, the model speaker-diarization-community-1 uses) embeds a clip's speech and each segment.
    The gated checkpoint is out of reach here, so the weights are random: this checks the shapes, long spans in
    pieces, too-short spans and the identity, not the voices."""
    torch = pytest.importorskip("torch")
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.pipelines.speaker_verification import PyannoteAudioPretrainedSpeakerEmbedding

    from whisperx_server.voice_embedding import PyannoteVoices

    torch.manual_seed(0)

    class Pipeline:   # whisperx's DiarizationPipeline holds pyannote's pipeline as .model
        class model:
            _embedding = PyannoteAudioPretrainedSpeakerEmbedding(WeSpeakerResNet34())

    voices = PyannoteVoices(Pipeline(), "pyannote/speaker-diarization-community-1")
    assert voices.id == "pyannote:pyannote/speaker-diarization-community-1"
    vec, seconds = voices.clip(cut(call, DIANE_CLIP))
    assert vec.shape == (256,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4 and 2.0 < seconds <= 3.2
    assert voices.clip(np.zeros(3 * SR, np.float32)) == (None, 0.0)     # no speech
    spans = [(0, 12 * SR), (int(18.6 * SR), int(21.7 * SR)), (SR, SR + 100)]
    out = voices.spans(call, spans)
    assert [None if v is None else v.shape for v in out] == [(256,), (256,), None]
    # a span embedded alone or among others: the same vector (no padding, no batch effects)
    alone = voices.spans(call, [spans[1]])[0]
    assert float(alone @ out[1]) > 0.9999
