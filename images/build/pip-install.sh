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
/opt/venv/bin/pip install "$@"
# bytecode for everything installed, compiled here once, in parallel: the images run with
# PYTHONDONTWRITEBYTECODE as a user that cannot write the venv, so a module without its .pyc is compiled again at
# every container start (about half of the import time of a cold start). A file that does not compile (a
# package's Python 2 leftovers, templates) stays source, as it was.
/opt/venv/bin/python -m compileall -qq -j0 /opt/venv/lib/python3*/site-packages || true
