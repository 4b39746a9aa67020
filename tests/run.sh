#!/usr/bin/env bash
# The whole test suite on a fresh machine: makes .venv, installs tests/requirements.txt,
# runs pytest. Extra arguments go to pytest (e.g. `bash tests/run.sh -k core -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
exec .venv/bin/python -m pytest "$@"
