#!/usr/bin/env bash
# Build build/out/linux/chatserver: a native one-file Linux binary of chatserver.py.
#
# Usage: build/build_linux.sh [--force]
#   --force            rebuild even if the binary is up to date with its inputs
#   CHATSERVER_SRC=F   build F instead of ./chatserver.py
#   PYTHON=python3     Python to build with; it must have a shared libpython
#                      (PyInstaller bundles it), which pyenv/Debian/python.org builds do.
#
# PyInstaller (pinned in build/requirements-build.txt) lives in a venv cached under
# build/cache/ (git-ignored); a second run reuses it and skips PyInstaller when no
# input changed since the last build.
set -euo pipefail

BUILD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BUILD_DIR")"
CACHE="$BUILD_DIR/cache"
OUT="$BUILD_DIR/out/linux"
SOURCE="$(realpath "${CHATSERVER_SRC:-$REPO_DIR/chatserver.py}")"
HOST_PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$BUILD_DIR/requirements-build.txt"
VENV="$CACHE/venv-linux"
STAMP="$OUT/.inputs.sha256"

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[build_linux] %s\n' "$*"; }

ensure_venv() {
    # The pins file is copied into the venv once installed; equal copies mean nothing to do.
    cmp -s "$REQUIREMENTS" "$VENV/requirements-build.txt" && return
    log "creating $VENV with pinned PyInstaller"
    rm -rf "$VENV"
    "$HOST_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements-build.txt"
}

inputs_digest() {
    { cat "$SOURCE" "$BUILD_DIR/chatserver.spec" "$BUILD_DIR/excludes.py" "$REQUIREMENTS" \
          "${BASH_SOURCE[0]}"; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1
}

build_binary() {
    log "running PyInstaller (log: $CACHE/pyinstaller-linux.log)"
    local started=$SECONDS
    CHATSERVER_SRC="$SOURCE" "$VENV/bin/python" -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$OUT" --workpath "$CACHE/pyi-linux" "$BUILD_DIR/chatserver.spec" \
        > "$CACHE/pyinstaller-linux.log" 2>&1 \
        || { tail -n 40 "$CACHE/pyinstaller-linux.log"; exit 1; }
    log "PyInstaller took $((SECONDS - started)) s"
}

main() {
    [[ -f "$SOURCE" ]] || { log "no server source at $SOURCE"; exit 2; }
    mkdir -p "$CACHE" "$OUT"
    ensure_venv
    local digest
    digest="$(inputs_digest)"
    if [[ $FORCE == 0 && -x "$OUT/chatserver" && "$(cat "$STAMP" 2>/dev/null)" == "$digest" ]]; then
        log "up to date: $OUT/chatserver"
        return
    fi
    rm -f "$STAMP"
    build_binary
    echo "$digest" > "$STAMP"
    log "built $OUT/chatserver ($(stat -c %s "$OUT/chatserver") bytes)"
}

main
