"""The mutation check in CI: every named bug of tests/mutations/catalog.py, put into a scratch
copy of chatserver.py, must be caught by the tests named for it. Two mutants at a time (the
machine has 2 cores), each stopping at its first failing test; a budget bounds the whole run.
Also: the catalog applies to today's chatserver.py, names tests that exist, and the tests
really run against the copy CHATSERVER_PY names; docs/RELIABILITY.md names a test and a
mutation on every line of its promises, and each such mutation is one its tests catch.

`python tests/mutations/run.py` runs the same check by hand (see its --help)."""
import json
import os
import re
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "mutations"))

import catalog  # noqa: E402
import run  # noqa: E402

JOBS = 2                      # parallel mutants: the CI machine has 2 cores, shared
TIMEOUT = 180.0               # seconds one mutant's tests may take (each fails fast: -x)
BUDGET = 20 * 60.0            # seconds for the whole list; mutants not started by then fail
RELIABILITY_MD = os.path.join(ROOT, "docs", "RELIABILITY.md")
# The sections of RELIABILITY.md whose every line names a test and a mutation.
CHECKED_SECTIONS = ("Messages are never lost once acknowledged", "Files are whole or absent",
                    "Nobody can hurt anybody else", "Limits", "Budgets",
                    "Nobody reads what is not theirs", "The organiser is in charge")


def test_every_anchor_occurs_once_and_every_mutant_compiles():
    assert run.check_anchors(catalog.MUTATIONS, run.read_source()) == []


def test_an_anchor_that_moved_is_a_loud_error_naming_the_mutation():
    lost = catalog.Mutation("renamed_away", "this text is not in chatserver.py", "x",
                            ("tests/test_core.py::test_text_too_long",), "a test of the runner")
    with pytest.raises(run.AnchorError, match="renamed_away.*occurs 0 times"):
        run.apply(lost, run.read_source())
    twice = lost._replace(name="ambiguous", anchor="def ")
    (problem,) = run.check_anchors([twice], run.read_source())
    assert "ambiguous" in problem and "re-anchor" in problem
    result = run.run_mutation(lost, run.read_source(), timeout=60)
    assert result["status"] == run.ERROR and "renamed_away" in result["detail"]


def _test_exists(node_id):
    path, _, name = node_id.partition("::")
    name = name.split("[")[0]
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        return False
    with open(full, encoding="utf-8") as f:
        return re.search(r"^def %s\(" % re.escape(name), f.read(), re.M) is not None


def test_every_named_test_exists():
    missing = sorted({t for m in catalog.MUTATIONS for t in m.tests if not _test_exists(t)})
    assert missing == []


def test_chatserver_py_points_both_kinds_of_test_at_the_copy(tmp_path):
    """The same test passes when the in-process module and the server process are both the
    copy (a copy with another __version__), and fails when only the server's answer differs
    (a copy whose /healthz lies): both kinds of test really use CHATSERVER_PY."""
    source = run.read_source()
    probe = ["tests/test_http.py::test_healthz_reports_version_clients_and_uptime"]
    renamed = source.replace('__version__ = "', '__version__ = "9.9.9-copy-', 1)
    assert renamed != source
    code, output, _ = run.run_pytest(run.write_copy(str(tmp_path), renamed), probe, 120)
    assert code == 0, output
    lying = source.replace('"version": __version__,', '"version": "not-the-copy",', 1)
    assert lying != source
    code, output, _ = run.run_pytest(run.write_copy(str(tmp_path), lying), probe, 120)
    assert code == 1, output


def _backticked(text):
    return re.findall(r"`([^`]+)`", text)


def reliability_lines():
    """(section, line) of every table row and bullet of the checked sections."""
    with open(RELIABILITY_MD, encoding="utf-8") as f:
        text = f.read()
    lines = []
    for section in CHECKED_SECTIONS:
        body = text.split("\n## " + section, 1)[1].split("\n## ", 1)[0]
        item = None
        for line in body.splitlines():
            if line.startswith("| ") and not line.startswith("| ---") and \
                    not re.match(r"\|\s*(promise|input|limit|budget)\s*\|", line):
                lines.append((section, line))
            elif line.startswith("- "):
                item = line
                lines.append((section, item))
            elif item is not None and line.startswith("  "):
                lines[-1] = (section, lines[-1][1] + " " + line.strip())
            else:
                item = None
    return lines


def test_reliability_md_names_a_test_and_a_mutation_on_every_line():
    by_name = {m.name: m for m in catalog.MUTATIONS}
    all_tests = {t.split("::")[1].split("[")[0] for m in catalog.MUTATIONS for t in m.tests}
    lines = reliability_lines()
    assert len(lines) > 30
    problems = []
    for section, line in lines:
        names = _backticked(line)
        tests = {n.split("::")[-1] for n in names if re.fullmatch(r"(\w+\.py::)?test_\w+", n)}
        mutations = [n for n in names if n in by_name]
        where = "%s: %s" % (section, line[:70])
        if not tests:
            problems.append("no test named: " + where)
        for t in tests:
            if not any(_test_exists("tests/%s::%s" % (f, t)) for f in os.listdir(HERE)
                       if f.startswith("test_") and f.endswith(".py")):
                problems.append("no such test %s: %s" % (t, where))
        if not mutations:
            problems.append("no mutation named: " + where)
        for name in mutations:
            if not set(t.split("::")[1] for t in by_name[name].tests) & tests:
                problems.append("mutation %s is caught by none of the tests named: %s"
                                % (name, where))
    assert problems == []
    named = {n for _, line in lines for n in _backticked(line) if n in by_name}
    assert all_tests and named


def test_every_mutation_is_caught(tmp_path):
    results = run.run_all(catalog.MUTATIONS, jobs=JOBS, timeout=TIMEOUT, budget=BUDGET)
    table = run.format_table(results)
    print(table)
    artifacts = os.path.join(ROOT, "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with open(os.path.join(artifacts, "mutations.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    bad = run.failures(results)
    assert not bad, "%d of %d mutations not caught:\n%s\n\n%s" % (
        len(bad), len(results), "\n".join("%s %s: %s\n%s" % (r["status"].upper(), r["name"],
                                                             r["bug"], r["detail"])
                                         for r in bad), table)
