"""WhisperX asynchronous jobs with a real Redis and a real worker (python -m whisperx_server.worker): a
diarized job on a two-voice conversation runs to the end, reports progress and renders the runbook's JSON and
OpenAI's formats; the same helpers as the faster service's job tests (tests/support/jobs_support.py)."""
from __future__ import annotations

import subprocess

import requests

from support.jobs_support import Worker, needs_redis, wait_finished

pytestmark = needs_redis


def test_diarized_job_end_to_end(start_server, redis_server, tiny_model, conversation, tmp_path):
    env = redis_server.jobs_env(tmp_path / "jobs")
    (tmp_path / "jobs").mkdir()
    api = start_server("jobs", **env)
    with open(conversation.wav_path, "rb") as f:
        r = requests.post(api.url + "/v1/jobs", files={"file": f}, timeout=60,
                          data={"diarize": "true", "num_speakers": "2", "response_format": "diarized_json"})
    assert r.status_code == 202, r.text
    job = r.json()
    worker = Worker(tmp_path, {"STT_MODEL": tiny_model, "STT_MODELS_DIR": str(tmp_path), **env},
                    "whisperx")
    try:
        status = wait_finished(api.url, job)
        assert status["status"] == "succeeded", (status, worker.logs())
        assert status["progress"]["fraction"] == 1.0
        diarized = requests.get(api.url + status["result_url"], timeout=10).json()   # the job's own format
        assert len({s["speaker"] for s in diarized["segments"]}) == 2
        runbook = requests.get(api.url + status["result_url"], params={"response_format": "json"}, timeout=10).json()
        assert runbook["diarization"]["speakers"] and runbook["segments"][0]["speaker"].startswith("SPEAKER_")
        srt = requests.get(api.url + status["result_url"], params={"response_format": "srt"}, timeout=10)
        assert "-->" in srt.text
    finally:
        worker.stop()


def test_job_with_prompt_and_temperature(start_server, redis_server, tiny_model, audio_dir, tmp_path):
    """OpenAI's prompt reaches the worker's decoder (a name spelled as the prompt spells it); an out-of-range
    temperature is refused when the job is submitted, in OpenAI's error shape."""
    wav = audio_dir / "job-name.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav),
                    "Please send the report to Kowalczyk before lunch."], check=True)
    env = redis_server.jobs_env(tmp_path / "jobs")
    (tmp_path / "jobs").mkdir()
    api = start_server("jobs-prompt", **env)

    def submit(**data):
        with open(wav, "rb") as f:
            return requests.post(api.url + "/v1/jobs", files={"file": f}, data=data, timeout=60)

    r = submit(temperature="2")
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature", r.text
    r = submit(prompt="Kowalczyk, Szczepanski.", temperature="0", response_format="text")
    assert r.status_code == 202, r.text
    job = r.json()
    worker = Worker(tmp_path, {"STT_MODEL": tiny_model, "STT_MODELS_DIR": str(tmp_path), **env}, "whisperx")
    try:
        status = wait_finished(api.url, job, 180)
        assert status["status"] == "succeeded", (status, worker.logs())
        text = requests.get(api.url + status["result_url"], timeout=10).text
        assert "Kowalczyk" in text, text
    finally:
        worker.stop()
