"""python -m stt_common.jobs.sweep: delete the job folders past their retention time (STT_JOB_TTL) and release
their bytes from the quotas, once, then exit.

The deploy runs it from a systemd timer on the front (hourly), in a one-off container of the service's worker
(`compose run --rm`, the same image, settings and mounts), so that files expire on time also while the service
is stopped by the autostart proxy; the workers no longer sweep."""
from __future__ import annotations

import logging
import sys

from .connection import redis_connection
from .runtime import standalone_settings
from .store import sweep_files


def main() -> int:
    settings = standalone_settings("to sweep job files")
    removed = sweep_files(redis_connection(settings), settings, settings.jobs_service)
    logging.getLogger("stt_common.jobs").info("sweep of %s: %d expired job folder(s) removed", settings.jobs_dir,
                                              removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
