"""Hostile and unlucky requests against the WhisperX server (ML environment): bounded temp disk, form floods refused early, the queue
before the body, hang-ups and the job limit, control characters, languages before decoding, health recovery.
Real server processes with the real tiny.en model."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import requests

from support import hostile

PATH = "/v1/audio/transcriptions"


def shape(a) -> dict:
    e = a.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    return e


def metrics(srv) -> str:
    return requests.get(srv.url + "/metrics", timeout=5).text


@pytest.fixture(scope="module")
def tmpdir_server(start_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wx-decode")
    srv = start_server("hardening", STT_TMP_DIR=str(tmp), STT_MAX_AUDIO_SECONDS="600", STT_MAX_QUEUE="0",
                       STT_BATCH_SIZE="1")
    srv.tmp = tmp
    return srv


@pytest.fixture(scope="module")
def long_speech(speech_wav, tmp_path_factory):
    d = tmp_path_factory.mktemp("wx-long")
    return hostile.repeat(speech_wav, d / "long.wav", 30)   # ~4 min of speech


def peak_dir_bytes(folder, stop: threading.Event, out: list):
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, sum(f.stat().st_size for f in folder.iterdir() if f.is_file()))
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    out.append(peak)


def test_hour_of_silence_writes_nothing_big(tmpdir_server, tmp_path):
    for name, make in (("hour.flac", hostile.silence_flac), ("piped.flac", hostile.headerless_stream)):
        f = make(tmp_path / name, 3600)
        stop, peak = threading.Event(), []
        t = threading.Thread(target=peak_dir_bytes, args=(tmpdir_server.tmp, stop, peak))
        t.start()
        a = hostile.post(tmpdir_server.url, PATH, hostile.multipart(file=f.read_bytes()))
        stop.set()
        t.join()
        assert a.status == 413 and shape(a)["code"] == "audio_too_long", a
        # decoding stopped at the 600 s limit: at most 600 s x 16 kHz x 4 bytes (38 MB), not the hour's 230 MB
        assert peak[0] <= 600 * 16000 * 4 + 2_000_000, (name, peak)
        assert not list(tmpdir_server.tmp.iterdir())


def test_form_floods_are_refused(tmpdir_server):
    a = hostile.post(tmpdir_server.url, PATH, hostile.multipart([("extra", b"x" * (1024 * 1024))] * 100, file=b"x"))
    assert a.status == 413 and shape(a)["code"] == "form_too_large" and a.sent < 50 * 1024 * 1024, a
    a = hostile.post(tmpdir_server.url, PATH, hostile.multipart([("extra", b"1")] * 400, file=b"x"))
    assert a.status == 400 and shape(a)["code"] == "too_many_fields", a


@pytest.mark.parametrize("field", ["model", "language", "diarize", "prompt"])
def test_control_characters_are_400(tmpdir_server, speech_wav, field):
    a = hostile.post(tmpdir_server.url, PATH, hostile.multipart([(field, b"a\x00b")], file=speech_wav.read_bytes()))
    assert a.status == 400 and shape(a)["param"] == field, a


@pytest.mark.parametrize("language", ["fr", "english", "xx"])
def test_languages_checked_before_decoding(tmpdir_server, speech_wav, language):
    a = hostile.post(tmpdir_server.url, "/transcribe",
                     hostile.multipart([("language", language.encode())], file=speech_wav.read_bytes()))
    e = shape(a)
    assert a.status == 400 and e["param"] == "language" and "English-only" in e["message"], a


def test_queue_full_before_the_body_and_hang_up_stops_the_job(tmpdir_server, long_speech):
    body = hostile.multipart(file=long_speech.read_bytes())
    # the same upload run to its end, for comparison
    full = hostile.post(tmpdir_server.url, PATH, body)
    assert full.status == 200, full
    before = hostile.metric(metrics(tmpdir_server), "stt_jobs_stopped_total", 'reason="disconnected"')
    release = threading.Event()
    t = threading.Thread(target=hostile.hang_up_on, args=(tmpdir_server.url, PATH, body, release))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while hostile.metric(metrics(tmpdir_server), "stt_inference_in_progress") < 1:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        big = hostile.multipart(file=b"\0" * 65536)
        a = hostile.post(tmpdir_server.url, PATH, big, length=100 * 1024 * 1024, send_limit=len(big), timeout=10)
        assert a.status == 503 and shape(a)["code"] == "queue_full", a
    finally:
        release.set()   # the client hangs up, the job just begun
        t.join()
    # it stops at its next check (between the VAD pass's batches, after an ASR batch...), not at its end: the
    # synchronous route once handed the job to the executor only, and engine.run never saw it cancelled
    idle = hostile.wait_idle(tmpdir_server.url, 60)
    assert idle < full.seconds / 3, (idle, full.seconds)
    assert hostile.metric(metrics(tmpdir_server), "stt_jobs_stopped_total", 'reason="disconnected"') == before + 1
    assert requests.get(tmpdir_server.url + "/health", timeout=5).status_code == 200   # alive, not crashed
    assert not list(tmpdir_server.tmp.iterdir())


class CancelAt:
    """A job (stt_common.StopHandle) that is cancelled, as by a hang-up, at its `n`-th stop check: where the engine
    then stops shows which stretch of the work checks (no clock involved)."""

    def __init__(self, n: int):
        from stt_common import StopHandle
        self.job, self.n, self.calls = StopHandle(None, None), n, 0

    def check(self):
        self.calls += 1
        if self.calls == self.n:
            self.job.cancel("disconnected")
        self.job.check()


@pytest.fixture(scope="module")
def engine(tiny_model, tmp_path_factory):
    from whisperx_server.engine import EngineConfig, WhisperXEngine
    return WhisperXEngine(EngineConfig(default_model=tiny_model, threads=2,
                                       models_dir=str(tmp_path_factory.mktemp("wx-engine-models"))))


@pytest.fixture(scope="module")
def pyannote_vad_engine(tiny_model, tmp_path_factory):
    """STT_VAD=pyannote: whisperx's own VAD model, the slow pass that needed a way to stop (silero, the default,
    takes about 2 s over 10 minutes)."""
    from whisperx_server.engine import EngineConfig, WhisperXEngine
    return WhisperXEngine(EngineConfig(default_model=tiny_model, threads=2, vad="pyannote",
                                       models_dir=str(tmp_path_factory.mktemp("wx-engine-models"))))


def stopped_in(engine, audio, job, **kw) -> list:
    """The source files the JobStopped raised by engine.run passed through, innermost last."""
    import traceback

    from stt_common import JobStopped
    with pytest.raises(JobStopped) as exc:
        engine.run(audio, language="en", job=job, **kw)
    return [f.filename for f in traceback.extract_tb(exc.value.__traceback__)]


def test_hang_up_during_vad_stops_inside_the_vad_pass(pyannote_vad_engine, long_speech, tmp_path):
    """pyannote's VAD pass over a whole window (26 s for 10 min of speech here) used to run to its end before the
    first check: a hang-up now stops it between its batches, before any ASR. Results with the check in place are
    the same as without (the whisperx tests' transcripts)."""
    from whisperx_server.audio import decode_to_memmap
    with decode_to_memmap(str(long_speech), str(tmp_path)) as audio:
        c = CancelAt(3)   # 1: before the window, 2: the VAD's start, 3: after its first batch
        files = stopped_in(pyannote_vad_engine, audio.array, c)
    assert any(f.endswith("pyannote/audio/core/inference.py") for f in files), files
    assert c.calls == 3, c.calls   # nothing checked after it: no ASR batch ran


def test_hang_up_during_diarization_stops_inside_it(engine, long_speech, tmp_path):
    """Diarization runs before ASR, over the whole recording: the offline backend checks between its steps and
    after each embedding batch."""
    if engine.diarization_backend() != "offline":
        pytest.skip("HF_TOKEN is set: the pyannote backend (hub) is out of reach here")
    from whisperx_server.audio import decode_to_memmap
    with decode_to_memmap(str(long_speech), str(tmp_path)) as audio:
        c = CancelAt(2)   # 1: after the speech regions, 2: after the first embedding batch
        files = stopped_in(engine, audio.array, c, diarize=True, align=False)
    assert any(f.endswith("diarize_offline/embedders.py") for f in files), files
    assert c.calls == 2, c.calls


def test_job_time_limit(start_server, long_speech):
    srv = start_server("timeout", STT_REQUEST_TIMEOUT="3", STT_BATCH_SIZE="1")
    try:
        a = hostile.post(srv.url, PATH, hostile.multipart(file=long_speech.read_bytes()))
        # stopped at the engine's next check, not at the end of the audio (about a minute here)
        assert a.status == 503 and shape(a)["code"] == "job_timeout" and a.seconds < 30, a
        # and the run itself stopped: the slot is free again
        assert hostile.wait_idle(srv.url, 10) < 10
    finally:
        srv.stop()


def test_health_recovers_when_the_default_model_loads_later(tmp_path_factory, tiny_model, server_class):
    Server = server_class
    d = tmp_path_factory.mktemp("wx-late")
    late = d / "models" / "late"
    late.mkdir(parents=True)
    srv = Server({"STT_MODEL": str(late)}, d / "server.log")
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                r = requests.get(srv.url + "/health", timeout=2)
                if r.status_code == 503 and r.json().get("status") == "error":
                    body = r.json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert body is not None and str(d) not in body["error"], body
        for f in os.listdir(tiny_model):
            shutil.copy(os.path.join(tiny_model, f), late / f)
        assert srv.wait_ready(timeout=90)["status"] == "ok"
    finally:
        srv.stop()
