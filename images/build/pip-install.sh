#!/bin/sh
# pip install into the image's /opt/venv, from inside a Dockerfile RUN:  pip-install.sh PIP-INSTALL-ARGS...
# Each Dockerfile passes its image's lock file (requirements.lock, written by make lock) with -r or -c.
# Where the wheels come from, first match wins:
#   PIP_WHEELHOUSE_URL  the wheelhouse the deploy serves on the host's loopback (build_wheelhouse):
#                       nothing is downloaded, a missing wheel is an error
#   INDEX_URL           an index for this install only (the whisperx image passes TORCH_INDEX_URL)
#   otherwise           pip's configured index
# An extra CA bundle in /tmp/build-ca/extra-ca.pem is trusted (TLS-intercepting proxies, build_ca_bundle).
set -eu
set -- --progress-bar off --no-compile "$@"
if [ -n "${PIP_WHEELHOUSE_URL:-}" ]; then
  set -- --no-index --find-links "$PIP_WHEELHOUSE_URL" "$@"
elif [ -n "${INDEX_URL:-}" ]; then
  set -- --index-url "$INDEX_URL" "$@"
fi
if [ -s /tmp/build-ca/extra-ca.pem ]; then
  export PIP_CERT=/tmp/build-ca/extra-ca.pem
fi
[ -x /opt/venv/bin/pip ] || python3 -m venv /opt/venv
exec /opt/venv/bin/pip install "$@"
