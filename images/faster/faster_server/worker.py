"""python -m faster_server.worker: an RQ worker for this service's asynchronous jobs (stt_common.jobs),
with the default model loaded once and kept."""
import logging
import os

from stt_common.jobs.worker import run_worker

from .engine import cuda_devices
from .jobs import job_spec
from .settings import FasterSettings


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FasterSettings()
    settings.require_device(cuda_devices)   # device=cuda without a GPU: one clear line, no job taken
    run_worker(job_spec(settings), settings, burst=os.environ.get("STT_WORKER_BURST") == "1")


if __name__ == "__main__":
    main()
