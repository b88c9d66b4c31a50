# Two commands for a newcomer on a fresh machine:
#   make demo   bring up the local sandbox host and deploy the whole platform to it
#   make test   every test tier (unit, then integration with real Docker, then end to end)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST := $(VPY) -m pytest
# the whisperx/diarization environment: torch, whisperx, pyannote (about 8 GB)
MLVENV := .venv-ml
MLPY := $(MLVENV)/bin/python
# every wheel both images install, downloaded once per machine (sandbox/wheelhouse.sh)
WHEELHOUSE ?= $(or $(WHISPER_WHEELHOUSE),$(HOME)/.cache/whisper-platform/wheelhouse)
export WHISPER_WHEELHOUSE := $(WHEELHOUSE)
# the integration folders that need the ML environment (the unit tier needs neither it nor Docker)
ML_INTEGRATION := $(wildcard tests/integration/whisperx tests/integration/diarize)

.PHONY: venv venv-ml lock wheelhouse docker promtool chromium base-images sandbox sandbox-brownfield sandbox-down deploy backup demo test test-unit test-integration \
        test-e2e run-faster run-whisperx bench clean

# every environment installs from its lock file (docs/environments.md, "Lock files"); `make lock` rewrites them
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.lock
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# torch, whisperx and the diarization stack come from the machine's wheelhouse (downloaded once, shared
# with the image builds), installed by uv (from .venv: unpacking 8 GB takes it a third of pip's time, and
# --no-index reads no index setting); only the small test tools come from the configured index, through pip
$(MLVENV)/.installed: images/whisperx/requirements.lock requirements-ml.lock | wheelhouse $(VENV)/.installed
	$(PY) -m venv $(MLVENV)
	$(VENV)/bin/uv pip install -q --python $(MLPY) --no-index --find-links "$(WHEELHOUSE)" -r images/whisperx/requirements.lock
	$(MLPY) -m pip install -q -r requirements-ml.lock
	touch $@

# the repo's own packages (the images' code, the autostart proxy: pyproject's [tool.setuptools]), editable and
# without dependencies, so the ML environment imports them as the dev venv does
$(MLVENV)/.project: pyproject.toml $(MLVENV)/.installed
	$(MLPY) -m pip install -q --no-deps -e .
	touch $@

venv-ml: $(MLVENV)/.project

# Rewrites every lock file from what it locks, for the images' Python (3.11 on Linux x86-64), from uv's
# configured index (UV_DEFAULT_INDEX or uv.toml; none set: its default). Versions already locked stay
# unless a requirement no longer allows them; `make lock UPGRADE=1` moves everything to the newest.
# .venv's and the faster image's locks carry each file's hash; the whisperx ones cannot (docs/environments.md, "Lock files").
#   requirements.lock                     .venv: pyproject.toml's dependencies and its dev extra
#   images/faster/requirements.lock       the faster image (images/faster/requirements.txt)
#   images/faster/requirements-cuda.lock  its GPU variant (+ requirements-cuda.txt), the same versions
#   images/whisperx/requirements.lock     the whisperx image (torch-requirements.txt, requirements.txt,
#                                         images/diarize/requirements.txt), installed as constraints
#   images/whisperx/torch-requirements.lock  its torch layer alone, the same versions
#   requirements-ml.lock                  .venv-ml: the whisperx image's versions plus the test tools
UV_COMPILE = $(VENV)/bin/uv pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
             --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: | $(VENV)/.installed
	$(UV_COMPILE) --generate-hashes pyproject.toml --extra dev -o requirements.lock
	$(UV_COMPILE) --generate-hashes images/faster/requirements.txt -o images/faster/requirements.lock
	$(UV_COMPILE) --generate-hashes images/faster/requirements.txt images/faster/requirements-cuda.txt \
	  -c images/faster/requirements.lock -o images/faster/requirements-cuda.lock
	$(UV_COMPILE) images/whisperx/torch-requirements.txt images/whisperx/requirements.txt \
	  images/diarize/requirements.txt -o images/whisperx/requirements.lock
	$(UV_COMPILE) images/whisperx/torch-requirements.txt -c images/whisperx/requirements.lock \
	  -o images/whisperx/torch-requirements.lock
	$(UV_COMPILE) requirements-ml.txt -c images/whisperx/requirements.lock -o requirements-ml.lock

wheelhouse:
	bash sandbox/wheelhouse.sh

docker:
	bash sandbox/ensure-docker.sh

base-images: docker
	bash sandbox/base-images.sh

sandbox: venv base-images
	bash sandbox/up.sh

# srv759970's hand-made twin (Debian 13, Compose v2), same ports as `make sandbox`: one of the two at a time;
# deploy to it with DEPLOY_TARGET=brownfield (docs/takeover.md)
sandbox-brownfield: venv base-images
	bash sandbox/brownfield/up.sh

sandbox-down:
	bash sandbox/down.sh
	bash sandbox/worker-down.sh --all $${SANDBOX_WORKER_NAME:-$${SANDBOX_NAME:-whisper-sandbox}-w1}
	bash sandbox/brownfield/down.sh

# deploy: pyinfra against the sandbox host (DEPLOY_TARGET=production for srv759970, see docs/takeover.md);
# the sandbox's throwaway secrets are read from .sandbox/secrets.env by the deploy itself, the shipped models it
# uploads are made first (group_data/sandbox.py only names their folders)
deploy: venv
	@if [ "$${DEPLOY_TARGET:-sandbox}" = sandbox ]; then $(VPY) -m sandbox.models tiny.en base >/dev/null; fi
	$(VENV)/bin/pyinfra inventory.py deploy.py -y

# a backup of the target's front host now, pulled into backup_pull_dir (docs/rebuilding.md)
backup: venv
	$(VENV)/bin/pyinfra inventory.py backup.py -y

demo: sandbox deploy
	$(VPY) -m sandbox.demo

# promtool and amtool (Debian's prometheus packages, unpacked, never installed as services) for the alert rule tests
promtool:
	bash sandbox/ensure-promtool.sh

# headless Chromium (Debian's) for the e2e test that looks at the monitoring page
chromium:
	@command -v chromium >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

# seconds, with the dev venv only (and promtool): no Docker, no torch, no espeak-ng, no model
test-unit: venv promtool
	$(PYTEST) tests/unit

# `docker` also installs espeak-ng and sox, which the test-data generators (tests/integration/testdata) speak with
test-integration: venv venv-ml docker base-images
	$(PYTEST) tests/integration $(addprefix --ignore=,$(ML_INTEGRATION))
	$(if $(ML_INTEGRATION),$(MLPY) -m pytest $(ML_INTEGRATION))

# the e2e tier rebuilds the sandbox from scratch itself (SANDBOX_REUSE=1 keeps a running one); then the
# brownfield host replaces it (same ports) for the takeover tests. test_multihost.py adds a worker host
# (SANDBOX_WORKER_NAME, default <sandbox name>-w1; SSH on 127.0.0.1:SANDBOX_WORKER_SSH_PORT, default 2233)
test-e2e: venv base-images chromium
	$(PYTEST) tests/e2e --ignore=tests/e2e/test_brownfield.py
	$(PYTEST) tests/e2e/test_brownfield.py

test: test-unit test-integration test-e2e

run-faster: venv
	bash images/faster/run-local.sh

run-whisperx: venv-ml
	bash images/whisperx/run-local.sh

# each benchmark prints its table; full_platform needs the deployed sandbox (make demo)
bench: venv venv-ml
	$(VPY) bench/faster_overhead.py
	$(VPY) bench/faster_long_audio.py
	$(MLPY) bench/diarization.py
	$(MLPY) bench/whisperx_memory.py
	$(MLPY) bench/multilingual.py
	$(VPY) bench/full_platform.py
	$(VPY) bench/abuse.py
	$(VPY) bench/backup.py

clean: sandbox-down
	rm -rf $(VENV) .pytest_cache
