"""Fixtures the integration folders share."""
import pytest

from support.jobs_support import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real redis-server (AOF on, password) on 127.0.0.1 for one test module (tests/support/jobs_support.py)."""
    r = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()
