"""Which process loads what: a job worker never imports an HTTP app (the services' app modules, stt_common's FastAPI
app construction), an API never imports the job worker (RQ's worker, our worker module, the job functions), and
the function paths RQ stored with jobs queued before an upgrade still resolve. Each import runs in a fresh
interpreter, so that nothing this test process loaded earlier hides an import."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("rq", reason="rq is needed by the jobs")

HTTP_APPS = ("faster_server.app", "whisperx_server.app", "stt_common.app")
WORKER_SIDE = ("rq.worker", "stt_common.jobs.worker", "stt_common.jobs.execution", "stt_common.jobs.webhooks",
               "stt_common.jobs.relay", "stt_common.jobs.remote")


def loaded_after(code: str) -> set:
    """The modules a fresh interpreter has loaded after running `code`."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("worker", ["faster_server.worker", "whisperx_server.worker"])
def test_a_worker_loads_no_http_app(worker):
    modules = loaded_after(f"import {worker}")
    assert worker in modules and "stt_common.jobs.worker" in modules
    assert not modules & set(HTTP_APPS), f"{worker} loads {sorted(modules & set(HTTP_APPS))}"


@pytest.mark.parametrize("service", ["faster_server", "whisperx_server"])
def test_an_api_built_with_jobs_loads_no_worker_side(service):
    # build_app constructs the FastAPI app with its /v1/jobs routes and collector, as the API process does
    modules = loaded_after(f"from {service}.app import build_app\nbuild_app()")
    assert f"{service}.app" in modules and "stt_common.jobs.routes" in modules
    assert not modules & set(WORKER_SIDE), f"the {service} API loads {sorted(modules & set(WORKER_SIDE))}"


def test_the_names_rq_stored_with_queued_jobs_resolve_through_the_allow_list_only():
    """RQ keeps "stt_common.jobs.execute" (etc.) in every job it enqueued: jobs queued before an upgrade still run;
    anything else a job names is refused without being imported (no module of its choosing is loaded)."""
    code = ("import sys\n"
            "from stt_common.jobs import codec, keys\n"
            "for path in (keys.EXECUTE, keys.ON_FAILURE):\n"
            "    f = codec.allowed_function(path)\n"
            "    print(path, f.__module__ + '.' + f.__name__)\n"
            "for path in ('os.system', 'stt_common.jobs.deliver_webhook', 'antigravity.fly', ''):\n"
            "    try:\n"
            "        codec.allowed_function(path)\n"
            "    except codec.DisallowedFunction:\n"
            "        print(path or '-', 'refused')\n"
            "print('antigravity', 'loaded' if 'antigravity' in sys.modules else 'not-loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    resolved = dict(line.split() for line in out.splitlines())
    assert resolved == {
        "stt_common.jobs.execute": "stt_common.jobs.execution.execute",
        "stt_common.jobs.on_failure": "stt_common.jobs.execution.on_failure",
        "os.system": "refused", "stt_common.jobs.deliver_webhook": "refused", "antigravity.fly": "refused",
        "-": "refused", "antigravity": "not-loaded",
    }


def test_the_package_still_offers_its_public_names():
    import stt_common.jobs as jobs

    for name in jobs.__all__:
        assert getattr(jobs, name) is not None
    with pytest.raises(AttributeError):
        jobs.no_such_name  # noqa: B018
