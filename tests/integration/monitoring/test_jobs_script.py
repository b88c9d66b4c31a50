"""templates/prometheus/jobs.lua.j2 against a real Redis holding real RQ state: what the Redis exporter publishes
about the job queues at each scrape (queued, waiting for a retry, running, webhooks, the oldest job's age, live
workers per service and per worker host, failed webhooks). The exporter runs the same script with EVAL; so does
this test. Key names come from RQ itself and from stt_common.jobs.keys, so a renamed key breaks this test."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from support.jobs_support import needs_redis
from stages import monitoring_config as mc
from stages.settings import Platform, read_group_data

pytestmark = needs_redis

rq = pytest.importorskip("rq")
redis = pytest.importorskip("redis")
from rq import Queue, Worker  # noqa: E402
from rq.registry import StartedJobRegistry  # noqa: E402
from stt_common.jobs import link  # noqa: E402
from stt_common.jobs.keys import queue_name, stats_key  # noqa: E402
from stt_common.jobs.webhooks import queue_delivery  # noqa: E402


def values(conn) -> dict:
    script = mc.render_jobs_script(Platform.from_group_data(read_group_data()))
    out = conn.eval(script, 0)
    pairs = [x.decode() for x in out]
    return {pairs[i]: float(pairs[i + 1]) for i in range(0, len(pairs), 2)}


@pytest.fixture
def conn(redis_server):
    c = redis.Redis(port=redis_server.port, password=redis_server.password)
    c.flushall()
    yield c
    c.flushall()


def test_no_job_ever_still_reports_every_service(conn):
    got = values(conn)
    for svc in ("faster", "whisperx"):
        assert got[f"queued:{svc}"] == 0 and got[f"workers:{svc}"] == 0 and got[f"oldest_age_seconds:{svc}"] == 0
        assert got[f"webhook_failures:{svc}"] == 0


def test_queues_workers_and_the_oldest_job(conn):
    q = Queue(queue_name("faster"), connection=conn)
    first = q.enqueue("os.getcwd")
    time.sleep(2.1)
    q.enqueue("os.getcwd")
    q.enqueue_in(timedelta(minutes=5), "os.getcwd")                       # a retry waiting
    queue_delivery(conn, "faster", "https://hooks.example.org/in", "o1", {"id": first.id}, 3600)
    conn.zadd(StartedJobRegistry(queue=q).key, {f"{first.id}:exec": time.time() + 60})
    conn.hset(stats_key("faster"), "webhook_failures", 4)
    for name in ("srv759970/aa11", "gpu1/bb22", "gpu1/cc33"):
        Worker([q], connection=conn, name=name).register_birth()
    Worker([Queue(queue_name("whisperx"), connection=conn)], connection=conn, name="srv759970/dd44").register_birth()

    got = values(conn)
    assert got["queued:faster"] == 2 and got["scheduled:faster"] == 1 and got["running:faster"] == 1
    assert got["webhooks:faster"] == 1 and got["webhook_failures:faster"] == 4
    assert 2 <= got["oldest_age_seconds:faster"] <= 10
    assert got["workers:faster"] == 3
    assert got["host_workers:faster:gpu1"] == 2 and got["host_workers:faster:srv759970"] == 1
    assert got["workers:whisperx"] == 1 and got["queued:whisperx"] == 0

    # a worker host's slots: counted from their requests for work (link.py), not from the front's relays for them
    Worker([q], connection=conn, name="srv759970/relay-ee55").register_birth()
    conn.hset("stt:faster:link:seen", mapping={"gpu2|s1": time.time(), "gpu2|s2": time.time() - 5,
                                               "gpu3|s1": time.time() - mc.LINK_SEEN_TTL_S - 10})
    got = values(conn)
    assert got["workers:faster"] == 5 and got["host_workers:faster:gpu2"] == 2
    assert "host_workers:faster:gpu3" not in got and got["host_workers:faster:srv759970"] == 1
    assert mc.LINK_SEEN_TTL_S == link.SEEN_TTL_S
    conn.delete("stt:faster:link:seen")

    # a worker whose registration expired (killed, its host gone) is not alive, even while RQ's set still names it
    conn.delete("rq:worker:gpu1/bb22", "rq:worker:gpu1/cc33")
    got = values(conn)
    assert got["workers:faster"] == 1 and "host_workers:faster:gpu1" not in got
