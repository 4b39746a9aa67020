"""Shared pytest setup: the repository root and tests/ on sys.path, and server fixtures.

CHATSERVER_PY=/path/to/chatserver.py runs the suite against that copy instead of the
repository's: the in-process `import chatserver` and the servers ServerProcess starts both
use it (tests/mutations/ runs tests against mutated copies this way)."""
import importlib.util
import os
import sys

import pytest
from hypothesis import Phase, settings

_TESTS = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_TESTS, ".."), _TESTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def _import_chatserver_from(path):
    """Load `path` as the module `chatserver`, before any test module imports it."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise pytest.UsageError("CHATSERVER_PY=%s is not a file" % path)
    loaded = sys.modules.get("chatserver")
    if loaded is not None:
        if os.path.abspath(loaded.__file__) != path:
            raise pytest.UsageError("chatserver was imported from %s before CHATSERVER_PY=%s "
                                    "could apply" % (loaded.__file__, path))
        return
    spec = importlib.util.spec_from_file_location("chatserver", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chatserver"] = module
    spec.loader.exec_module(module)


if os.environ.get("CHATSERVER_PY"):
    _import_chatserver_from(os.environ["CHATSERVER_PY"])

from chatclient import ServerProcess  # noqa: E402

# tests/mutations/run.py passes --hypothesis-profile=mutation: a fuzzer that catches a mutant
# reports it without shrinking the example (minutes saved), and keeps no example database.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.generate, Phase.target],
                          database=None)


@pytest.fixture
def make_server(tmp_path):
    """Start real servers on 127.0.0.1: make_server("--open", ...) -> ServerProcess.
    `env` adds environment variables for the server process; `nofile` caps its open files
    (RLIMIT_NOFILE, soft and hard)."""
    started = []

    def make(*extra, data_dir=None, env=None, nofile=None):
        srv = ServerProcess(data_dir or tmp_path / ("data%d" % len(started)), *extra, env=env,
                            nofile=nofile)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server):
    """An open (no token) server with rate limiting relaxed for tests."""
    return make_server("--open", "--rate-limit", "0")
