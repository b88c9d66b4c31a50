"""python -m whisperx_server.worker: an RQ worker for this service's asynchronous jobs (stt_common.jobs),
with the default model loaded once and kept."""
import logging
import os

from stt_common.jobs.worker import run_worker

from .jobs import worker_spec
from .settings import cuda_devices

WARM_NICENESS = 10


def yielding(warm):
    """The worker's warm-up (the default model) at a lower CPU priority: it starts in the same compose project as
    the API, whose first request a user waits for; on a small host the two loads shared the cores and the API's
    start took longer. Linux sets the priority per thread, so only the warm-up's own thread is lowered (a thread
    cannot raise it back unprivileged): the jobs run at the usual priority."""
    def run():
        import threading
        box: dict = {}

        def lowered():
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_NICENESS)
            except OSError:
                pass
            try:
                warm()
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                box["error"] = exc
        t = threading.Thread(target=lowered, name="warm-up")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
    return run


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    spec, settings = worker_spec()
    settings.require_device(cuda_devices)   # device=cuda without a GPU: one clear line, no job taken
    if spec.warm:
        spec.warm = yielding(spec.warm)
    run_worker(spec, settings, burst=os.environ.get("STT_WORKER_BURST") == "1")


if __name__ == "__main__":
    main()
