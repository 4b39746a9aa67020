#!/usr/bin/env python3
"""Prints `name version` for every package in pubspec.lock, sorted.

CI runs it before and after `flutter pub get` and fails if the two differ: the committed
lock must be what pub resolves (pub may add sha256 fields; versions must not move).
"""
import re
import sys
from pathlib import Path


def lock_versions(text):
    versions, name = {}, None
    for line in text.splitlines():
        match = re.match(r"^  ([a-z0-9_]+):$", line)
        if match:
            name = match.group(1)
            continue
        match = re.match(r'^    version: "([^"]+)"$', line)
        if match and name:
            versions[name] = match.group(1)
            name = None
    return versions


def main(argv):
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "pubspec.lock"
    for name, version in sorted(lock_versions(path.read_text(encoding="utf-8")).items()):
        print(name, version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
