"""A finished job's webhook: signed and POSTed by the front's worker, queued for RQ's retries when it fails."""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ..errors import APIError
from . import runtime
from .keys import DELIVER_WEBHOOK, webhook_queue_name
from .signing import SIGNATURE_HEADER, check_callback_url, sign

log = logging.getLogger("stt_common.jobs")

WEBHOOK_RETRY_INTERVALS = [10, 60, 300, 900, 1800]


def send_or_queue_webhook(conn, url: str, payload: dict) -> None:
    """Delivered at once when this worker holds the webhook secret; else (a worker host: the secret stays on the
    front, whose worker delivers) or on failure, queued on the service's webhook queue with RQ's retries."""
    settings = runtime.SETTINGS
    if not settings.webhook_secret or not deliver_webhook(url, payload, raise_on_failure=False):
        from rq import Queue, Retry
        Queue(webhook_queue_name(runtime.SPEC.service), connection=conn).enqueue(
            DELIVER_WEBHOOK, url, payload,
            retry=Retry(max=len(WEBHOOK_RETRY_INTERVALS), interval=WEBHOOK_RETRY_INTERVALS),
            result_ttl=3600, failure_ttl=int(settings.job_ttl))


def deliver_webhook(url: str, payload: dict, raise_on_failure: bool = True) -> bool:
    """POST the signed payload; any 2xx is delivered. The retries are RQ's (interval list above)."""
    settings = runtime.SETTINGS
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "whisper-platform-webhook",
               SIGNATURE_HEADER: sign(settings.webhook_secret, int(time.time()), body)}
    try:
        check_callback_url(url, settings.webhook_allow_private)
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                    timeout=10) as r:
            ok = 200 <= r.status < 300
    except (urllib.error.URLError, OSError, APIError, ValueError) as e:
        log.warning("webhook to %s failed: %s", urlsplit(url).hostname, getattr(e, "message", e))
        ok = False
    if not ok:
        from rq import get_current_job
        job = get_current_job()
        if job is not None:
            runtime.stat(job.connection, "webhook_failures")
        if raise_on_failure:
            raise RuntimeError("webhook delivery failed")
    return ok
