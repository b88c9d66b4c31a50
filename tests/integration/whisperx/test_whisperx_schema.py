"""Property-based API tests (Schemathesis) against the WhisperX server's own OpenAPI schema, which describes the
real multipart fields of /transcribe and /v1/audio/transcriptions: whatever is generated, no 5xx, and every error
in OpenAI's shape. Bounded to 50 examples per operation (under 10 s here once the server is up). Real server process,
real tiny.en model (ML environment: .venv-ml/bin/python -m pytest tests/integration/whisperx)."""
from __future__ import annotations

import shutil

import pytest

from support.jobs_support import RedisServer
from support.openai_errors import check_answer

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is installed in .venv-ml by make venv-ml")
from hypothesis import HealthCheck, settings  # noqa: E402

KEY = "schema-key"


@pytest.fixture(scope="module")
def api_schema(start_server, tmp_path_factory):
    # with a real Redis, so that the job routes are exercised too (no worker: generated jobs stay queued)
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (make docker installs it)")
    redis = RedisServer(tmp_path_factory.mktemp("schema-redis")).start()
    # and an enrolled-voices store, so that /v1/speakers is exercised as deployed (not its 503 without one)
    srv = start_server("schema", STT_API_KEYS=KEY, STT_ALLOW_OPEN_ACCESS="0", STT_BATCH_SIZE="1",
                       STT_SPEAKERS_DIR=str(tmp_path_factory.mktemp("schema-speakers")),
                       **redis.jobs_env(tmp_path_factory.mktemp("schema-jobs")))
    yield schemathesis.openapi.from_url(srv.url + "/openapi.json")
    redis.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_openai_errors(case):
    check_answer(case, KEY)
