"""The layering of chatserver.py (docs/ARCHITECTURE.md), checked on its source:

- protocol handlers and the domain talk to their connection and to the loop's public API,
  never to the Server's fields or anyone's private members;
- each error code, message type and setting is declared once, in its table, and the
  documents (PROTOCOL.md, README.md) agree with the tables."""
import ast
import os
import re

import pytest

import chatserver as cs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = open(cs.__file__, encoding="utf-8").read()
TREE = ast.parse(SOURCE)

# The classes above the loop: they may not reach into it.
LAYERED = ("Chat", "Connection", "FramedSession", "HttpConnection", "Outbox", "FileStore",
           "MessageStore")
# What a connection or handler may use of the loop (`conn.loop.X`, `self.loop.X`) and of
# the site (`self.site.X`): the Server's docstring lists the same.
LOOP_API = {"call_later", "wants_flush", "watch", "abort_after_pass", "joined", "sniff",
            "resume_soon", "defer", "backlog_changed", "lingering", "drop", "hello_deadline",
            "config", "fds"}
SITE_API = {"health", "pairing_urls", "host_allowed", "origin_allowed", "operator",
            "rotate_token"}


def classes(names):
    return [node for node in TREE.body if isinstance(node, ast.ClassDef) and node.name in names]


def private_reaches(cls):
    """`x._name` where x is not `self`/`cls`: a reach into someone else's private member."""
    found = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append("%s:%d %s" % (cls.name, node.lineno, ast.unparse(node)))
    return found


def api_uses(cls, holder):
    """Attribute names used on `<something>.<holder>` (e.g. conn.loop.X)."""
    return {(node.attr, node.lineno) for node in ast.walk(cls)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == holder}


def test_no_layer_reaches_into_a_private_member():
    layered = classes(LAYERED)
    assert len(layered) == len(LAYERED)
    found = [reach for cls in layered for reach in private_reaches(cls)]
    assert found == []


def test_the_check_can_fail():
    bad = ast.parse("class HttpConnection:\n    def f(self):\n        self.server._queue(1)\n")
    assert private_reaches(bad.body[0]) == ["HttpConnection:3 self.server._queue"]


def test_handlers_use_only_the_loop_api():
    for cls in classes(LAYERED):
        for name, line in api_uses(cls, "loop"):
            assert name in LOOP_API, "%s:%d uses loop.%s" % (cls.name, line, name)
        for name, line in api_uses(cls, "site"):
            assert name in SITE_API, "%s:%d uses site.%s" % (cls.name, line, name)
    (server,) = classes(("Server",))
    for name in LOOP_API - {"config", "fds"}:
        assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in server.body), name
    doc = ast.get_docstring(server)
    assert all(name in doc for name in LOOP_API - {"config", "fds"})


def test_no_handler_holds_the_server():
    """The old wall-breaker: `self.server` in a handler."""
    for cls in classes(LAYERED):
        for node in ast.walk(cls):
            assert not (isinstance(node, ast.Attribute) and node.attr == "server"), \
                "%s:%d" % (cls.name, node.lineno)


# -- one row per fact -------------------------------------------------------------------

def protocol_table(section):
    text = open(os.path.join(ROOT, "docs", "PROTOCOL.md"), encoding="utf-8").read()
    start = text.index("\n## %s" % section)
    end = text.find("\n## ", start + 4)
    body = text[start:end if end > 0 else None]
    return re.findall(r"^\| `([a-z_]+)` \|", body, re.M)


def test_every_error_code_is_one_row_and_the_contract_lists_the_same():
    raised = set(re.findall(r'(?:ChatError|FrameError)\(\s*"([a-z_]+)"', SOURCE))
    assert raised <= set(cs.ERRORS), raised - set(cs.ERRORS)
    assert set(protocol_table("6. Error codes")) == set(cs.ERRORS)
    for code, kind in cs.ERRORS.items():
        assert 400 <= kind.http_status < 600 and kind.sentence, code
        assert kind.ws_close in (1001, 1008), code
    for row in re.findall(r"^\| `([a-z_]+)` \|.*\| (yes|no) \|$",
                          open(os.path.join(ROOT, "docs", "PROTOCOL.md")).read(), re.M):
        assert cs.ERRORS[row[0]].fatal == (row[1] == "yes"), row


def test_every_client_message_type_has_one_handler_row():
    assert set(protocol_table("3. Client → server messages")) == set(cs.HANDLERS)
    for kind, row in cs.HANDLERS.items():
        assert callable(getattr(cs.Chat, row.method)), kind


def readme_settings():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = text[text.index("| flag | environment | default | meaning |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2]))
    return rows


def test_the_readme_configuration_table_is_the_settings_table():
    assert readme_settings() == [(s.flag, s.env, s.shown) for s in cs.SETTINGS]


def test_every_setting_is_a_flag_an_environment_variable_and_a_config_field(monkeypatch):
    parser = cs.build_arg_parser()
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings}
    assert {s.flag for s in cs.SETTINGS} <= flags
    config = cs.config_from_args(parser.parse_args([]))
    for s in cs.SETTINGS:
        assert getattr(config, s.name) == s.default == getattr(cs.Config(), s.name), s.name
    monkeypatch.setenv("CHAT_PORT", "6001")
    monkeypatch.setenv("CHAT_OPEN", "yes")
    monkeypatch.setenv("CHAT_SYNC", "NORMAL")
    args = cs.build_arg_parser().parse_args([])
    assert (args.port, args.open, args.sync) == (6001, True, "normal")
    assert cs.build_arg_parser().parse_args(["--port", "6002"]).port == 6002
    with pytest.raises(TypeError):
        cs.Config(no_such_setting=1)
