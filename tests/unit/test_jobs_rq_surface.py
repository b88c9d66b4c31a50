"""What the job worker (stt_common/jobs/worker.py) relies on in RQ beyond its documented API, pinned on the locked
rq version: an RQ upgrade that changes any of it fails here, by name, before it breaks retries on a live host.

Why each is used:
- the scheduler is named after its worker (RQScheduler's `name`, which is what a queue's scheduler lock holds), so
  that a worker can tell that the lock's holder died with its worker and take the lock over (retries due run on
  time instead of after the lock's 61 s). RQ's `work(with_scheduler=True)` starts an unnamed one, so ours is started
  from `bootstrap()`, the hook `work()` calls right before it would start RQ's;
- `scheduler._process`: whether our scheduler process is alive, the check RQ's own maintenance makes (RQ has no
  public accessor); after a takeover a live one is stopped (`stop_scheduler`) so that RQ's maintenance restarts it
  with all the locks (`acquire_locks(auto_start=True)` when the process is gone);
- `rq.scripts.release_lock` drops a dead holder's lock only if it still holds it; a worker's registration key is
  `redis_worker_namespace_prefix + name`;
- `SimpleWorker` hooks overridden or called for the heartbeat thread: `get_heartbeat_ttl`, `execute_job`,
  `prepare_execution`, `perform_job`, `heartbeat`, `Execution.heartbeat`, `set_state`, `run_maintenance_tasks`."""
import inspect

import pytest

pytest.importorskip("rq", reason="rq is needed by the jobs")

from redis import Redis  # noqa: E402
from rq import scripts  # noqa: E402
from rq.executions import Execution  # noqa: E402
from rq.scheduler import RQScheduler  # noqa: E402
from rq.worker import SimpleWorker, WorkerStatus  # noqa: E402

from stt_common.jobs.worker import ModelWorker  # noqa: E402


def params(func) -> list:
    return list(inspect.signature(func).parameters)


def test_work_calls_bootstrap_before_it_would_start_its_own_scheduler():
    src = inspect.getsource(SimpleWorker.work)
    assert "with_scheduler" in params(SimpleWorker.work) and "burst" in params(SimpleWorker.work)
    assert "self.bootstrap(logging_level, date_format, log_format)" in src
    assert src.index("self.bootstrap(") < src.index("if with_scheduler:") < src.index("self._install_signal_handlers")
    assert params(SimpleWorker.bootstrap) == ["self", "logging_level", "date_format", "log_format"]


def test_the_scheduler_takes_its_workers_name_and_locks_with_it():
    assert "name" in params(RQScheduler.__init__)
    scheduler = RQScheduler(["stt-faster"], connection=Redis(), name="host-a/1234abcd")   # connects lazily
    assert scheduler.name == "host-a/1234abcd"
    assert RQScheduler.get_locking_key("stt-faster") == "rq:scheduler-lock:stt-faster"
    # the lock's value is the scheduler's name
    assert "self.get_locking_key(name), self.name" in inspect.getsource(RQScheduler.acquire_locks)
    assert params(scripts.release_lock) == ["connection", "lock_key", "owner_token"]


def test_the_scheduler_process_attribute_and_rqs_own_restart():
    scheduler = RQScheduler(["stt-faster"], connection=Redis(), name="w")
    assert scheduler._process is None   # set by start(), which forks the scheduler process
    assert "self._process = " in inspect.getsource(RQScheduler.start)
    maintenance = inspect.getsource(SimpleWorker.run_maintenance_tasks)
    assert "self.scheduler._process" in maintenance and "acquire_locks(auto_start=True)" in maintenance
    assert "self.scheduler._process" in inspect.getsource(SimpleWorker.stop_scheduler)


def test_a_workers_registration_key_is_its_name_under_the_namespace():
    # a worker connects to Redis when it is built: read the key's definition instead
    assert SimpleWorker.redis_worker_namespace_prefix == "rq:worker:"
    assert "return self.redis_worker_namespace_prefix + self.name" in inspect.getsource(SimpleWorker.key.fget)


def test_the_worker_hooks_keep_their_signatures():
    assert params(SimpleWorker.get_heartbeat_ttl) == ["self", "job", "working_time"]
    assert params(SimpleWorker.execute_job) == ["self", "job", "queue"]
    assert params(SimpleWorker.prepare_execution) == ["self", "job"]
    assert params(SimpleWorker.perform_job) == ["self", "job", "queue", "execution"]
    assert params(SimpleWorker.heartbeat)[:3] == ["self", "timeout", "pipeline"]
    assert params(Execution.heartbeat) == ["self", "started_job_registry", "ttl", "pipeline"]
    assert params(SimpleWorker.run_maintenance_tasks) == ["self"]
    assert WorkerStatus.IDLE
    for name in ("get_heartbeat_ttl", "execute_job", "bootstrap", "work", "run_maintenance_tasks"):
        assert name in vars(ModelWorker), f"ModelWorker no longer overrides {name}"
    # none of RQ's private methods is overridden any more
    assert not [n for n in vars(ModelWorker) if n.startswith("_") and not n.startswith("__")]
