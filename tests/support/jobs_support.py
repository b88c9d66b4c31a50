"""What the job tests of both services share: a real redis-server (AOF on, password) and a real RQ worker
process (python -m <service>_server.worker), both on 127.0.0.1, both started and stopped by the tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


needs_redis = pytest.mark.skipif(not shutil.which("redis-server"),
                                 reason="redis-server is not installed (make docker installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, unixsocket: bool = False):
        self.folder, self.port, self.password = folder, _free_port(), "redis-test-password"
        self.socket = folder / "redis.sock" if unixsocket else None   # also a unix socket, as on the hosts
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--requirepass", self.password]
            + (["--unixsocket", str(self.socket)] if self.socket else []),
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "-a", self.password, "--no-auth-warning", "ping"],
                              capture_output=True, text=True).stdout.strip() == "PONG":
                return self
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start: " + (self.folder / "redis.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()   # SIGTERM: Redis flushes its AOF and exits
            self.proc.wait(20)

    def jobs_env(self, jobs_dir: Path, **extra) -> dict:
        """The services' settings for jobs on this Redis."""
        return {"STT_REDIS_URL": self.url, "REDIS_PASSWORD": self.password, "STT_JOBS_DIR": str(jobs_dir), **extra}


def service_pythonpath(service: str) -> str:
    """What a service's processes import from the source tree (as its image lays it out)."""
    folders = {"faster": ("images/common", "images/faster"),
               "whisperx": ("images/common", "images/diarize", "images/whisperx", ".")}[service]
    return os.pathsep.join(str(ROOT / f) for f in folders)


class Worker:
    """A service's job worker process (`python -m <service>_server.worker`), or another module of the jobs (the
    relay: `module="stt_common.jobs.relay"`)."""

    def __init__(self, tmp_path: Path, env: dict, service: str, module: str = ""):
        module, pythonpath = module or f"{service}_server.worker", service_pythonpath(service)
        self.log = tmp_path / f"worker-{time.monotonic_ns()}.log"
        full = dict(os.environ)
        full.update({"PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "STT_CPU_THREADS": "2", "LOG_LEVEL": "INFO",
                     "PYANNOTE_METRICS_ENABLED": "0", **env})
        # its own process group: RQ's scheduler is a child process, and kill_all() kills both as a container's
        # end would (the OOM killer taking the container's main process, a host going down)
        self.proc = subprocess.Popen([sys.executable, "-m", module], env=full, cwd=str(ROOT),
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill_all(self) -> None:
        """SIGKILL the worker and its children (its scheduler) at once: nothing of it is left to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_finished(api_url: str, job: dict, timeout: float = 300, headers=None) -> dict:
    """Poll a job's status until it has succeeded, failed or been canceled (or `timeout` runs out): its status."""
    import requests
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(api_url + job["status_url"], timeout=10, headers=headers).json()
        if status["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
