"""Static checks of the Flutter client (client_flutter/), without a Dart SDK.

No Dart or Flutter SDK can be installed on these machines, so:
- every .dart file is parsed with the tree-sitter Dart grammar: any ERROR or missing node
  fails, reported as file:line (a negative control proves the check can fail);
- the codec in lib/services/ must name every message type and error code of
  docs/PROTOCOL.md (tables of sections 3, 4 and 6) as a string literal;
- pubspec.yaml must declare every package that lib/ and test/ import;
- lib/services/ stays pure Dart (no Flutter import), so the protocol runs anywhere;
- pubspec.lock is committed and every version in it satisfies pubspec.yaml, and the
  workflow pins the Flutter version the lock was made for;
The real compile, `flutter analyze` and `flutter test` run in .github/workflows/flutter.yml.
"""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client_flutter"
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"

# Packages that come with the Flutter SDK (declared with `sdk: flutter`, or implicit).
SDK_PACKAGES = {"flutter", "flutter_test", "flutter_web_plugins", "flutter_localizations",
                "flutter_driver", "integration_test", "sky_engine"}

# Fewest names each PROTOCOL.md table has today: a parser that finds fewer is broken.
MIN_CLIENT_TYPES, MIN_SERVER_TYPES, MIN_ERROR_CODES = 12, 14, 26


def _dart_parser():
    try:
        import tree_sitter
        import tree_sitter_dart
    except ImportError as error:  # pragma: no cover - depends on the machine
        if os.environ.get("CI") == "true":
            pytest.fail("tree-sitter-dart is required in CI: %s" % error)
        pytest.skip("tree-sitter / tree-sitter-dart not installed (tests/requirements.txt)")
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))


@pytest.fixture(scope="module")
def parser():
    return _dart_parser()


def syntax_errors(parser, source):
    """(line, description) for every ERROR or missing node of the parse tree."""
    tree = parser.parse(source)
    found = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "missing %r" % node.type if node.is_missing else "syntax error"
            snippet = source[node.start_byte:node.end_byte][:40].decode("utf-8", "replace")
            found.append((node.start_point[0] + 1, "%s near %r" % (kind, snippet)))
        if node.has_error:
            stack.extend(node.children)
    return sorted(found)


def dart_files(*folders):
    files = []
    for folder in folders or (CLIENT,):
        files.extend(sorted(p for p in folder.rglob("*.dart")
                            if ".dart_tool" not in p.parts and "build" not in p.parts))
    return files


def walk(node):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def string_literals(parser, source):
    """Plain string literals (no interpolation) of a Dart source, unquoted."""
    values = set()
    for node in walk(parser.parse(source).root_node):
        if node.type != "string_literal":
            continue
        if any(child.type == "template_substitution" for child in node.children):
            continue
        text = source[node.start_byte:node.end_byte].decode("utf-8")
        text = text[1:] if text.startswith("r") else text
        for quote in ("'''", '"""', "'", '"'):
            if text.startswith(quote) and text.endswith(quote) and len(text) >= 2 * len(quote):
                values.add(text[len(quote):-len(quote)])
                break
    return values


def imported_uris(parser, source):
    """URIs of every import/export of a Dart source, conditional ones included."""
    uris = []
    for node in walk(parser.parse(source).root_node):
        if node.type == "uri":
            literal = source[node.start_byte:node.end_byte].decode("utf-8")
            uris.append(literal.strip("'\""))
    return uris


# ---------------------------------------------------------------------------- syntax


def test_client_has_dart_sources():
    files = dart_files()
    assert len(files) >= 20, "client_flutter/ looks empty: %s" % files
    assert (CLIENT / "lib" / "main.dart") in files


def test_every_dart_file_parses(parser):
    problems = []
    for path in dart_files():
        for line, what in syntax_errors(parser, path.read_bytes()):
            problems.append("%s:%d: %s" % (path.relative_to(ROOT), line, what))
    assert not problems, "Dart syntax errors:\n" + "\n".join(problems)


@pytest.mark.parametrize("snippet, line", [
    (b"void main() {\n  print('x')\n}\n", 2),                     # missing ;
    (b"class A {\n  void f() {\n    return;\n", 1),                # missing }
    (b"sealed class R {}\nfinal x = switch (1) { 1 => };\n", 2),  # switch arm without value
])
def test_negative_control_broken_dart_is_reported(parser, snippet, line):
    errors = syntax_errors(parser, snippet)
    assert errors, "a broken snippet parsed cleanly: the check could never fail"
    assert errors[0][0] == line


def test_modern_dart_constructs_parse(parser):
    """The constructs the client relies on must not trip the grammar."""
    source = b"""
sealed class Result<T> { const Result(); }
final class Ok<T> extends Result<T> { const Ok(this.value); final T value; }
abstract final class Names { static const String a = 'a'; }
String show(Result<int> r) => switch (r) { Ok(:final value) => '$value', _ => '' };
(int, String) pair() => (1, 'a');
void f(Object o) {
  switch (o) {
    case final int i when i > 2:
      print(i);
    case String() || num():
      break;
  }
  final (a, b) = pair();
  if (o case {'type': final String t}) print('$t $a $b');
}
"""
    assert syntax_errors(parser, source) == []


# ------------------------------------------------------------------ protocol coverage


def protocol_table_names(section_number):
    """Backticked names in the first column of the tables of a PROTOCOL.md section."""
    text = PROTOCOL.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)
    section = next(s for s in sections if s.startswith("%d." % section_number))
    names = []
    for row in re.findall(r"^\|(.*)\|\s*$", section, flags=re.M):
        first_cell = row.split("|")[0]
        names.extend(re.findall(r"`([a-z_]+)`", first_cell))
    return names


def test_protocol_tables_are_parsed():
    assert len(protocol_table_names(3)) >= MIN_CLIENT_TYPES
    assert len(protocol_table_names(4)) >= MIN_SERVER_TYPES
    assert len(protocol_table_names(6)) >= MIN_ERROR_CODES
    assert "ping" in protocol_table_names(4) and "pong" in protocol_table_names(4)


@pytest.fixture(scope="module")
def service_literals(parser):
    literals = set()
    for path in sorted((CLIENT / "lib" / "services").glob("*.dart")):
        literals |= string_literals(parser, path.read_bytes())
    return literals


@pytest.mark.parametrize("section, what", [(3, "client message type"),
                                           (4, "server message type"),
                                           (6, "error code")])
def test_codec_knows_every_protocol_name(service_literals, section, what):
    missing = [n for n in protocol_table_names(section) if n not in service_literals]
    assert not missing, "%ss of PROTOCOL.md §%d missing from lib/services/*.dart: %s" % (
        what, section, missing)


def test_string_literal_extraction_is_exact(parser):
    source = b"const a = 'bad_frame'; final b = \"x_$a\"; const c = r'raw';"
    assert string_literals(parser, source) == {"bad_frame", "raw"}


# ------------------------------------------------------------------------ packages


def pubspec_sections():
    """Top-level name and the package names under dependencies / dev_dependencies."""
    name, section, sections = None, None, {"dependencies": set(), "dev_dependencies": set()}
    for raw in (CLIENT / "pubspec.yaml").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        top = re.match(r"^([A-Za-z_]+):\s*(.*)$", line)
        if top:
            section = top.group(1) if top.group(1) in sections else None
            if top.group(1) == "name":
                name = top.group(2).strip()
            continue
        entry = re.match(r"^  ([a-z0-9_]+):", line)
        if section and entry:
            sections[section].add(entry.group(1))
    return name, sections["dependencies"], sections["dev_dependencies"]


def imported_packages(parser, folder):
    """{package: [files]} for every package: import under folder."""
    found = {}
    for path in dart_files(folder):
        for uri in imported_uris(parser, path.read_bytes()):
            match = re.match(r"package:([a-z0-9_]+)/", uri)
            if match:
                found.setdefault(match.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def test_pubspec_declares_packages_used_by_lib(parser):
    name, dependencies, _ = pubspec_sections()
    assert name == "lan_chat"
    used = imported_packages(parser, CLIENT / "lib")
    assert {"web_socket_channel", "crypto", "mobile_scanner"} <= set(used)
    undeclared = {pkg: files for pkg, files in used.items()
                  if pkg != name and pkg not in SDK_PACKAGES and pkg not in dependencies}
    assert not undeclared, "imported by lib/ but not in pubspec dependencies: %s" % undeclared


def test_pubspec_declares_packages_used_by_tests(parser):
    name, dependencies, dev_dependencies = pubspec_sections()
    used = imported_packages(parser, CLIENT / "test")
    undeclared = {pkg: files for pkg, files in used.items()
                  if pkg != name and pkg not in SDK_PACKAGES
                  and pkg not in dependencies | dev_dependencies}
    assert not undeclared, "imported by test/ but not declared: %s" % undeclared


def test_pubspec_has_sdk_constraints_and_lints():
    text = (CLIENT / "pubspec.yaml").read_text(encoding="utf-8")
    # Dart 3.9 (Flutter 3.35): the null-aware elements (`'k': ?v`) the code uses need 3.8.
    assert re.search(r'sdk: ">=3\.9\.0 <4\.0\.0"', text)
    assert re.search(r'flutter: ">=3\.35\.0"', text)
    assert "flutter_lints" in pubspec_sections()[2]
    assert "package:flutter_lints/flutter.yaml" in (
        CLIENT / "analysis_options.yaml").read_text(encoding="utf-8")


def test_services_are_pure_dart(parser):
    """The protocol layer imports no Flutter library, so it runs in any Dart VM."""
    offenders = {}
    for path in dart_files(CLIENT / "lib" / "services"):
        flutter = [u for u in imported_uris(parser, path.read_bytes())
                   if re.match(r"package:(flutter|flutter_test)/", u)
                   or u.startswith("package:lan_chat/screens")]
        if flutter:
            offenders[str(path.relative_to(ROOT))] = flutter
    assert not offenders, offenders


def test_dart_tests_read_the_shared_vectors():
    """The Dart codec test reads every tests/vectors/frames*.json, as pytest does."""
    test_source = (CLIENT / "test" / "services" / "frame_codec_test.dart").read_text("utf-8")
    folder = re.search(r"const String vectorsFolder = '([^']+)';", test_source).group(1)
    assert (CLIENT / folder).resolve() == ROOT / "tests" / "vectors"
    assert "startsWith('frames')" in test_source and "endsWith('.json')" in test_source
    assert (ROOT / "tests" / "vectors" / "frames.json").is_file()


# ------------------------------------------------------------------------ workflow


def test_workflow_builds_and_tests_the_client():
    workflow = (ROOT / ".github" / "workflows" / "flutter.yml").read_text(encoding="utf-8")
    for step in ("subosito/flutter-action", "flutter pub get", "tool/setup_platforms.sh",
                 "flutter analyze", "flutter test", "flutter build apk", "flutter build web",
                 "client_flutter/**"):
        assert step in workflow, step


# ---------------------------------------------------------------- lock and versions

def parse_version(text):
    """Dart semver: (major, minor, patch, is_release, pre-release, build) for ordering."""
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$", text)
    assert match, "not a version: %r" % text
    pre, build = match.group(4), match.group(5)
    key = lambda part: [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in part.split(".")]
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)),
            0 if pre else 1, key(pre) if pre else [], key(build) if build else [])


def allows(constraint, version):
    """Whether a pub version constraint (`^1.2.3`, `>=1.0.0 <2.0.0`, `1.2.3`, `any`) allows
    `version`. As pub does, a pre-release is not allowed by a range that excludes it."""
    constraint = constraint.strip().strip("'\"")
    v = parse_version(version)
    if constraint == "any":
        return True
    if constraint.startswith("^"):
        low = parse_version(constraint[1:])
        if low[0] > 0:
            high = (low[0] + 1, 0, 0, 0, [], [])
        elif low[1] > 0:
            high = (0, low[1] + 1, 0, 0, [], [])
        else:
            high = (0, 0, low[2] + 1, 0, [], [])
        return low <= v < high and (v[3] == 1 or low[3] == 0)
    ok = True
    for op, bound in re.findall(r"(>=|<=|>|<|)\s*(\d[^\s<>=]*)", constraint):
        b = parse_version(bound)
        ok &= {">=": v >= b, ">": v > b, "<=": v <= b, "<": v < b, "": v[:3] == b[:3] and v == b}[op]
    return ok and (v[3] == 1 or "-" in constraint)


def pubspec_constraints():
    """{package: constraint or 'sdk'} of dependencies and dev_dependencies, with the section."""
    found, section, pending = {}, None, None
    for raw in (CLIENT / "pubspec.yaml").read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        top = re.match(r"^([a-z_]+):", line)
        if top:
            section = top.group(1) if top.group(1) in ("dependencies", "dev_dependencies") else None
            continue
        entry = re.match(r"^  ([a-z0-9_]+):\s*(.*)$", line)
        if section and entry:
            pending = entry.group(1)
            found[pending] = (section, entry.group(2).strip().strip('"') or None)
        elif section and pending and re.match(r"^    sdk: flutter$", line):
            found[pending] = (section, "sdk")
    return found


def parse_lock(text):
    """{package: {"dependency", "source", "version"}} and the sdks section of pubspec.lock."""
    packages, sdks, current, block = {}, {}, None, None
    for line in text.splitlines():
        if re.match(r"^(packages|sdks):$", line):
            block = line[:-1]
            continue
        if block == "packages":
            name = re.match(r"^  ([a-z0-9_]+):$", line)
            if name:
                current = packages.setdefault(name.group(1), {})
                continue
            field = re.match(r'^    (dependency|source|version): "?([^"]*)"?$', line)
            if field and current is not None:
                current[field.group(1)] = field.group(2)
        elif block == "sdks":
            field = re.match(r'^  (dart|flutter): "([^"]+)"$', line)
            if field:
                sdks[field.group(1)] = field.group(2)
    return packages, sdks


@pytest.fixture(scope="module")
def lock():
    path = CLIENT / "pubspec.lock"
    assert path.is_file(), "client_flutter/pubspec.lock must be committed (an app commits its lock)"
    return parse_lock(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("constraint, version, expected", [
    ("^10.3.10", "10.3.10", True), ("^10.3.10", "10.3.9", False), ("^10.3.10", "11.0.0", False),
    ("^0.13.0", "0.13.4", True), ("^0.13.0", "0.14.0", False), ("^0.0.3", "0.0.4", False),
    (">=3.35.0", "3.41.9", True), (">=3.35.0", "3.32.8", False),
    (">=1.0.4 <3.0.0", "2.0.0", True), (">=1.0.4 <3.0.0", "3.0.0", False),
    ("^3.0.0", "3.1.0-dev.1", False), ("^0.3.4+2", "0.3.5+4", True), ("^0.3.4+2", "0.3.4+1", False),
    ("1.2.3", "1.2.3", True), ("1.2.3", "1.2.4", False), ("any", "0.0.1", True),
])
def test_version_constraint_check_is_exact(constraint, version, expected):
    assert allows(constraint, version) is expected


def test_lock_versions_satisfy_pubspec(lock):
    packages, _ = lock
    declared = pubspec_constraints()
    assert {"file_picker", "mobile_scanner", "web_socket_channel", "flutter_lints"} <= set(declared)
    problems = []
    for name, (section, constraint) in sorted(declared.items()):
        entry = packages.get(name)
        want = "direct main" if section == "dependencies" else "direct dev"
        if entry is None:
            problems.append("%s is in pubspec.yaml but not in pubspec.lock" % name)
        elif entry.get("dependency") != want:
            problems.append("%s is %r in the lock, expected %r" % (name, entry.get("dependency"), want))
        elif constraint == "sdk":
            if entry.get("source") != "sdk":
                problems.append("%s should come from the Flutter SDK" % name)
        elif not allows(constraint, entry["version"]):
            problems.append("%s %s does not satisfy %s" % (name, entry["version"], constraint))
    extra = [n for n, e in packages.items() if e.get("dependency", "").startswith("direct")
             and n not in declared]
    assert not problems and not extra, "\n".join(problems + ["%s: direct in the lock only" % n
                                                            for n in extra])


def test_lock_entries_are_complete(lock):
    packages, sdks = lock
    assert len(packages) > 50, "the lock lists every transitive package"
    for name, entry in packages.items():
        assert entry.get("source") in ("hosted", "sdk"), name
        assert entry.get("dependency") in ("direct main", "direct dev", "transitive"), name
        parse_version(entry.get("version", ""))
    assert set(sdks) == {"dart", "flutter"}


FLUTTER_PIN = re.compile(r"^\s*FLUTTER_VERSION:\s*\"(\d+\.\d+\.\d+)\"\s*$", re.M)


def test_workflow_pins_the_flutter_version(lock):
    workflow = (ROOT / ".github" / "workflows" / "flutter.yml").read_text(encoding="utf-8")
    pins = FLUTTER_PIN.findall(workflow)
    assert len(pins) == 1, "flutter.yml must set FLUTTER_VERSION to one exact release"
    assert "flutter-version: ${{ env.FLUTTER_VERSION }}" in workflow
    assert "channel: stable" in workflow
    pinned = pins[0]
    _, sdks = lock
    floor = re.match(r">=(\S+)", sdks["flutter"]).group(1)
    assert parse_version(floor) <= parse_version(pinned), "the lock needs a newer Flutter"
    assert allows(">=3.35.0", pinned)
    readme = (CLIENT / "README.md").read_text(encoding="utf-8")
    assert "Flutter %s" % pinned in readme, "README.md names the pinned Flutter"


def test_workflow_checks_that_pub_keeps_the_lock():
    """CI fails when `flutter pub get` changes a locked version: the lock was resolved by
    reading every package's pubspec at its tag, and this is where it meets real pub."""
    workflow = (ROOT / ".github" / "workflows" / "flutter.yml").read_text(encoding="utf-8")
    assert "tool/lock_versions.py" in workflow
    assert (CLIENT / "tool" / "lock_versions.py").is_file()
