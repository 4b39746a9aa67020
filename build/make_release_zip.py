"""Pack the Windows release: build/out/ChatServer-<version>-windows-x64.zip holding

    chatserver.exe
    firewall.ps1
    README.txt

Flat: Explorer's "Extract all" already proposes a folder named after the zip.
README.txt gets CRLF line endings for old Notepad. Timestamps inside the zip are
fixed, so the same inputs give the same zip bytes.

Usage: python build/make_release_zip.py [--exe PATH] [--out-dir DIR]
"""
import argparse
import os
import sys
import zipfile

BUILD_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BUILD_DIR)
sys.path.insert(0, BUILD_DIR)
from version_info import read_module_string  # noqa: E402

DEFAULT_EXE = os.path.join(BUILD_DIR, "out", "windows", "chatserver.exe")
DEFAULT_OUT_DIR = os.path.join(BUILD_DIR, "out")
FIREWALL_SCRIPT = os.path.join(REPO_DIR, "firewall.ps1")
README = os.path.join(BUILD_DIR, "README.txt")
SOURCE = os.environ.get("CHATSERVER_SRC") or os.path.join(REPO_DIR, "chatserver.py")
# Zip entries carry DOS timestamps, which start in 1980.
FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
EXECUTABLE_MODE = 0o755 << 16   # external_attr: Unix permission bits live in the high word
REGULAR_MODE = 0o644 << 16


def zip_name(version):
    return "ChatServer-%s-windows-x64.zip" % version


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def add_file(archive, arcname, data, mode):
    info = zipfile.ZipInfo(arcname, date_time=FIXED_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = mode
    archive.writestr(info, data)


def make_zip(exe, out_dir, version):
    with open(exe, "rb") as f:
        exe_bytes = f.read()
    with open(FIREWALL_SCRIPT, "rb") as f:
        firewall_bytes = f.read()
    with open(README, encoding="utf-8") as f:
        readme_bytes = crlf(f.read()).encode("utf-8")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, zip_name(version))
    with zipfile.ZipFile(path, "w") as archive:
        add_file(archive, "chatserver.exe", exe_bytes, EXECUTABLE_MODE)
        add_file(archive, "firewall.ps1", firewall_bytes, REGULAR_MODE)
        add_file(archive, "README.txt", readme_bytes, REGULAR_MODE)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pack the Windows release zip.")
    parser.add_argument("--exe", default=DEFAULT_EXE)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    version = read_module_string(SOURCE, "__version__")
    print(make_zip(args.exe, args.out_dir, version))


if __name__ == "__main__":
    sys.exit(main())
