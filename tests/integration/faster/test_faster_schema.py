"""Property-based API tests (Schemathesis) against the faster-whisper server's own OpenAPI schema, which
describes the real multipart fields: whatever is generated, no 5xx, and every error in OpenAI's shape.
Bounded to a few dozen examples per operation (about a minute here). Real server, real tiny.en model."""
from __future__ import annotations

import shutil

import pytest

from support.jobs_support import RedisServer
from support.openai_errors import check_answer

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra (make venv)")
from hypothesis import HealthCheck, settings  # noqa: E402

from .conftest import start_server, stop_server  # noqa: E402

KEY = "schema-key"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # with a real Redis, so that the job routes are exercised too (no worker: generated jobs stay queued)
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (make docker installs it)")
    redis = RedisServer(tmp_path_factory.mktemp("schema-redis")).start()
    s = start_server(tmp_path_factory.mktemp("faster-schema"), STT_API_KEYS=KEY,
                     **redis.jobs_env(tmp_path_factory.mktemp("schema-jobs")))
    try:
        yield schemathesis.openapi.from_url(s.url + "/openapi.json")
    finally:
        stop_server(s)
        redis.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_openai_errors(case):
    check_answer(case, KEY)
