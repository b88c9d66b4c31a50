"""The brownfield sandbox (`make sandbox-brownfield`, DEPLOY_TARGET=brownfield): srv759970's twin.

Production's values (the declared defaults: domain, Let's Encrypt mode with the certificates already in
certbot's layout, the runbook's paths and ports), plus the sandbox's offline build settings (local
base image, the machine's CA bundle and wheelhouse, the shipped models): the host has no registry
and no model hub either.
"""

import runpy as _runpy
from pathlib import Path as _Path

_here = _Path(__file__).resolve().parent
_OFFLINE = ("base_image", "seed_images", "build_ca_bundle", "build_wheelhouse", "model_uploads", "service_overrides",
            "autostart_idle_timeout")
_sandbox = _runpy.run_path(str(_here / "sandbox.py"))
for _key in _OFFLINE:
    globals()[_key] = _sandbox[_key]
for _key, _value in _runpy.run_path(str(_here / "production.py")).items():
    if not _key.startswith("_"):
        globals()[_key] = _value
