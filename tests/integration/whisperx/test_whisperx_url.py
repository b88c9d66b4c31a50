"""WhisperX with audio by URL (`file_url`): the runbook's diarized `/transcribe` and a diarized job, the recording
served by a real local HTTP server, real tiny.en inference and offline diarization, a real Redis and worker.
127.0.0.2 stands for a public bucket (the test's servers allow exactly that address: STT_URL_ALLOW_NETWORKS);
the refusals themselves are covered in tests/unit/test_whisperx_url.py and tests/integration/faster/test_faster_url.py."""
from __future__ import annotations

from pathlib import Path

import requests

from support.jobs_support import Worker, needs_redis, wait_finished
from support.local_http import Receiver, answer

BUCKET = "127.0.0.2"
URL_ENV = {"STT_URL_ALLOW_NETWORKS": f"{BUCKET}/32"}


def serving(path) -> Receiver:
    data = Path(path).read_bytes()
    return Receiver(BUCKET, behave=lambda conn, req: conn.sendall(answer(200, data, {"Content-Type": "audio/wav"})))


def form(**fields) -> dict:
    return {k: (None, v) for k, v in fields.items()}


def test_a_diarized_transcript_by_url_matches_the_upload(start_server, conversation, tmp_path):
    api = start_server("url", STT_SPEAKERS_DIR=str(tmp_path / "speakers"), **URL_ENV)
    fields = {"diarize": "true", "num_speakers": "2", "language": "en"}
    with serving(conversation.wav_path) as bucket:
        by_url = requests.post(api.url + "/transcribe", files=form(file_url=bucket.url + "/call.wav", **fields),
                               timeout=300)
    assert by_url.status_code == 200, by_url.text
    with open(conversation.wav_path, "rb") as f:
        upload = requests.post(api.url + "/transcribe", files={"file": f}, data=fields, timeout=300)
    a, b = by_url.json(), upload.json()
    assert [s["text"] for s in a["segments"]] == [s["text"] for s in b["segments"]]
    assert len({s["speaker"] for s in a["segments"]}) == 2
    r = requests.post(api.url + "/v1/audio/transcriptions", files=form(file_url="http://127.0.0.1:9/a.wav"),
                      timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "url_forbidden"


@needs_redis
def test_a_diarized_job_by_url(start_server, redis_server, tiny_model, conversation, tmp_path):
    env = redis_server.jobs_env(tmp_path / "jobs", **URL_ENV)
    (tmp_path / "jobs").mkdir()
    api = start_server("url-jobs", **env)
    with serving(conversation.wav_path) as bucket:
        r = requests.post(api.url + "/v1/jobs", timeout=60, files=form(
            file_url=bucket.url + "/call.wav", diarize="true", num_speakers="2", response_format="diarized_json"))
        assert r.status_code == 202, r.text
        assert not bucket.requests   # queued, not fetched by the API
        worker = Worker(tmp_path, {"STT_MODEL": tiny_model, "STT_MODELS_DIR": str(tmp_path), **env}, "whisperx")
        try:
            status = wait_finished(api.url, r.json())
            assert status["status"] == "succeeded", (status, worker.logs())
        finally:
            worker.stop()
        assert len(bucket.requests) == 1
    diarized = requests.get(api.url + status["result_url"], timeout=10).json()
    assert len({s["speaker"] for s in diarized["segments"]}) == 2
