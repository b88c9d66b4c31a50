# Two commands for a newcomer on a fresh machine:
#   make demo   bring up the local sandbox host and deploy the whole platform to it
#   make test   every test tier (unit, then integration with real Docker, then end to end)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST := $(VPY) -m pytest

.PHONY: venv docker base-images sandbox sandbox-down deploy demo test test-unit test-integration \
        test-e2e run-faster run-whisperx bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

docker:
	bash sandbox/ensure-docker.sh

base-images: docker
	bash sandbox/base-images.sh

sandbox: venv base-images
	bash sandbox/up.sh

sandbox-down:
	bash sandbox/down.sh

# deploy: pyinfra against the sandbox host (or the hosts named by INVENTORY_HOSTS, see README)
deploy: venv
	set -a; [ -f .sandbox/secrets.env ] && . .sandbox/secrets.env; set +a; \
	$(VENV)/bin/pyinfra inventory.py deploy.py -y

demo: sandbox deploy
	$(VPY) -m sandbox.demo

test-unit: venv
	$(PYTEST) tests/unit

test-integration: venv docker base-images
	$(PYTEST) tests/integration

test-e2e: sandbox
	$(PYTEST) tests/e2e

test: test-unit test-integration test-e2e

run-faster: venv
	$(VPY) -m images.run faster

run-whisperx: venv
	$(VPY) -m images.run whisperx

bench: venv
	$(VPY) -m bench

clean: sandbox-down
	rm -rf $(VENV) .pytest_cache
