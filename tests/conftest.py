"""Shared pytest setup: the repository root and tests/ on sys.path, and server fixtures."""
import os
import sys

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_TESTS, ".."), _TESTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from chatclient import ServerProcess  # noqa: E402


@pytest.fixture
def make_server(tmp_path):
    """Start real servers on 127.0.0.1: make_server("--open", ...) -> ServerProcess."""
    started = []

    def make(*extra, data_dir=None):
        srv = ServerProcess(data_dir or tmp_path / ("data%d" % len(started)), *extra)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server):
    """An open (no token) server with rate limiting relaxed for tests."""
    return make_server("--open", "--rate-limit", "0")
