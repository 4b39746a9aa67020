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
# axe-core, the accessibility rules the Chromium tests inject into the pages (npm comes with
# Node.js); without it those tests skip, except under CI=true
AXE_VERSION=4.14.1
if command -v npm >/dev/null 2>&1 && \
        ! grep -qs "\"version\": \"$AXE_VERSION\"" .venv/node/node_modules/axe-core/package.json; then
    npm install --silent --no-audit --no-fund --prefix .venv/node "axe-core@$AXE_VERSION" \
        >/dev/null 2>&1 || echo "tests/run.sh: could not install axe-core with npm" >&2
fi
exec .venv/bin/python -m pytest "$@"
