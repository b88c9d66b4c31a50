"""What a service's readiness answer says: ready, a permanent problem (waiting cannot help), asynchronous jobs
still queued or running (the idle stop waits for them), and how the service is (`ok`, or `degraded` and why: the
whisper images' /health, images/common/README.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import aiohttp

# a readiness answer that says waiting cannot help (README, "Permanent problems"): this header, or one of these codes
PERMANENT_HEADER = "X-Health-Permanent"
PERMANENT_CODES = ("device_unavailable",)
PERMANENT_BODY_LIMIT = 64 * 1024


def permanent_problem(status: int, headers, body: bytes) -> Optional[str]:
    """The service's message when a readiness answer reports a permanent problem, else None. Permanent: a non-2xx
    answer with the header `X-Health-Permanent: true` (any service can mark its answer so), or whose JSON body
    carries a code of PERMANENT_CODES, OpenAI-style (`{"error": {"code": ...}}`) or at the top level (the whisper
    images' /health: `{"status": "error", "error": "<message>", "code": "device_unavailable"}`)."""
    if 200 <= status < 300:
        return None
    marked = headers.get(PERMANENT_HEADER, "").strip().lower() in ("1", "true", "yes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    data = data if isinstance(data, dict) else {}
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else data.get("code")
    if not marked and code not in PERMANENT_CODES:
        return None
    message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    if not message:
        message = body.decode("utf-8", "replace").strip()[:500] or f"answered {status}"
    return f"{message} ({code})" if isinstance(code, str) and code else message


async def read_some(content, limit: int) -> bytes:
    """A response body up to `limit` bytes (the rest is left unread: the connection is not reused)."""
    chunks, size = [], 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def health_summary(body) -> Optional[dict]:
    """What the proxy keeps of a service's /health answer: its status, the dependencies it reports failing (the
    whisper images' `degraded`: ["redis"], ["disk"]) and its jobs (`{"queued", "running"}`, or `{"error": code}`
    while its job store is away). None when the answer is not such a JSON object."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return None
    out = {"status": body["status"][:40]}
    degraded = body.get("degraded")
    if isinstance(degraded, list):
        out["degraded"] = [str(d)[:40] for d in degraded[:20]]
    jobs = body.get("jobs")
    if isinstance(jobs, dict):
        out["jobs"] = {k: jobs[k] for k in ("queued", "running", "error") if k in jobs}
    return out


async def jobs_pending(session, sts) -> str:
    """'N jobs queued, M running' when a service's readiness answer reports asynchronous jobs in
    progress ({"jobs": {"queued": N, "running": M}}, as the whisper images' /health does), or 'jobs unknown'
    while it cannot count them ({"jobs": {"error": ...}}: its job store is away, jobs may be waiting in it);
    '' otherwise, also when the service does not answer or reports no jobs. What each says is kept
    (ServiceState.record_health)."""
    for st in sts:
        cfg = st.cfg
        try:
            async with session.get(f"http://127.0.0.1:{cfg.proxy_port}{cfg.readiness_path}",
                                   timeout=aiohttp.ClientTimeout(total=5), allow_redirects=False) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            continue
        st.record_health(health_summary(body))
        jobs = body.get("jobs") if isinstance(body, dict) else None
        if isinstance(jobs, dict):
            if jobs.get("error"):
                return f"jobs unknown ({jobs['error']})"
            queued, running = jobs.get("queued") or 0, jobs.get("running") or 0
            if isinstance(queued, int) and isinstance(running, int) and queued + running > 0:
                return f"{queued} jobs queued, {running} running"
    return ""
