"""What the worker process runs with: the service's JobSpec and settings (set once by run_worker, read by the job
functions RQ calls by name), the host a job runs on, and the counters it keeps in Redis."""
from __future__ import annotations

import threading
from typing import Optional, cast

from .connection import worker_name
from .keys import stats_key, worker_stats_key
from .spec import JobSpec

SPEC: Optional[JobSpec] = None
SETTINGS = None
# a relay (relay.py) runs each job on a worker host: that host's name, while the job runs
REMOTE_HOST: Optional[str] = None
TICKET: Optional[str] = None     # and the ticket its slot asked with, and the relay's own name
RELAY: Optional[str] = None
# set when the worker is asked to stop (SIGTERM: a deploy, Docker or the host restarting): the running job's next
# check() stops it and it goes back to its queue (execution.hand_back)
STOPPING = threading.Event()


def standalone_settings(purpose: str):
    """Logging and settings of a jobs process that loads no service code (the relay, the sweep): STTSettings from
    the environment, with STT_REDIS_URL and STT_JOBS_SERVICE set, or a clear exit."""
    import logging
    import os

    from ..settings import STTSettings

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = STTSettings()
    if not settings.redis_url or not settings.jobs_service:
        raise SystemExit(f"STT_REDIS_URL and STT_JOBS_SERVICE are needed {purpose}")
    return settings


def configure(spec: JobSpec, settings) -> None:
    global SPEC, SETTINGS
    SPEC, SETTINGS = spec, settings


def current_worker() -> str:
    """The host that runs the current job: a worker host's name for a relayed job, else this worker's."""
    return REMOTE_HOST or worker_name(SETTINGS)


def stat(conn, name: str, amount: float = 1.0) -> None:
    """A service-wide counter, and the same per worker host (webhook failures are the front's only)."""
    try:
        service = cast(JobSpec, SPEC).service   # configure() ran first (unset, this fails into the except as before)
        conn.hincrbyfloat(stats_key(service), name, amount)
        if SETTINGS is not None and name != "webhook_failures":
            conn.hincrbyfloat(worker_stats_key(service), f"{current_worker()}|{name}", amount)
    except Exception:  # noqa: BLE001
        pass
