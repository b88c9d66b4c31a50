"""What the worker process runs with: the service's JobSpec and settings (set once by run_worker, read by the job
functions RQ calls by name), and the counters it keeps in Redis."""
from __future__ import annotations

import threading
from typing import Optional

from .connection import worker_name
from .keys import stats_key, worker_stats_key
from .spec import JobSpec

SPEC: Optional[JobSpec] = None
SETTINGS = None
# set when the worker is asked to stop (SIGTERM: a deploy, Docker or the host restarting): the running job's next
# check() stops it and it goes back to its queue (execution.hand_back)
STOPPING = threading.Event()


def configure(spec: JobSpec, settings) -> None:
    global SPEC, SETTINGS
    SPEC, SETTINGS = spec, settings


def stat(conn, name: str, amount: float = 1.0) -> None:
    """A service-wide counter, and the same per worker host (webhook failures are the front's only)."""
    try:
        conn.hincrbyfloat(stats_key(SPEC.service), name, amount)
        if SETTINGS is not None and name != "webhook_failures":
            conn.hincrbyfloat(worker_stats_key(SPEC.service), f"{worker_name(SETTINGS)}|{name}", amount)
    except Exception:  # noqa: BLE001
        pass
