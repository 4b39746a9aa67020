"""firewall.ps1: syntax and contract checks without PowerShell.

No PowerShell can run here, so the script is parsed with the tree-sitter PowerShell grammar
(tests/requirements.txt): a node of type ERROR, or a node the parser had to invent
(is_missing), is a syntax error. The negative controls prove the check can fail.
"""
import ast
import os
import re

import pytest
import tree_sitter
import tree_sitter_powershell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIREWALL_SCRIPT = os.path.join(ROOT, "firewall.ps1")
SERVER = os.path.join(ROOT, "chatserver.py")
EXPECTED_PARAMS = {"Port": "[int]", "Remove": "[switch]", "Public": "[switch]",
                   "RuleName": "[string]"}

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


# -- helpers -------------------------------------------------------------------------------

def parse(source):
    return PARSER.parse(source).root_node


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(root):
    """(line, text) of every ERROR or missing node; empty for a valid script."""
    return [(n.start_point[0] + 1, n.text.decode("utf-8", "replace")[:60])
            for n in walk(root) if n.type == "ERROR" or n.is_missing]


def text(node):
    return node.text.decode("utf-8")


def script_params(root):
    """{name: (type literal, default text or None)} from the script's param() block."""
    block = next(n for n in root.children if n.type == "param_block")
    params = {}
    for param in (n for n in walk(block) if n.type == "script_parameter"):
        name = text(next(c for c in param.children if c.type == "variable")).lstrip("$")
        types = [text(n) for n in walk(param) if n.type == "type_literal"]
        default = next((c for c in param.children if c.type == "script_parameter_default"), None)
        default_value = None
        if default is not None:
            default_value = text(default).split("=", 1)[1].strip()
        params[name] = (types[0] if types else None, default_value)
    return params


def commands(root):
    """[(command name, {"-Param": value text or True for a switch}), ...] in source order."""
    found = []
    for node in walk(root):
        if node.type != "command":
            continue
        name = child_of_type(node, "command_name")
        if name is None:
            continue
        elements = [c for n in node.children if n.type == "command_elements"
                    for c in n.children if c.type != "command_argument_sep"]
        args = {}
        for i, element in enumerate(elements):
            if element.type == "command_parameter":
                following = elements[i + 1] if i + 1 < len(elements) else None
                if following is None or following.type == "command_parameter":
                    args[text(element)] = True
                else:
                    args[text(element)] = text(following)
        found.append((text(name), args))
    return found


def child_of_type(node, kind):
    return next((c for c in node.children if c.type == kind), None)


def top_level_statements(root):
    return child_of_type(root, "statement_list").children


def function_body(root, name):
    """The function_statement node defining `name` (PowerShell names are case-insensitive)."""
    return next(n for n in walk(root) if n.type == "function_statement"
                and text(child_of_type(n, "function_name")).lower() == name.lower())


def help_block(source):
    match = re.match(r"\s*<#(.*?)#>", source, re.S)
    assert match, "comment-based help must open the script"
    return match.group(1)


def module_constant(path, name):
    with open(path, "rb") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no module-level %s in %s" % (name, path))


@pytest.fixture(scope="module")
def source():
    with open(FIREWALL_SCRIPT, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def root(source):
    return parse(source)


# -- syntax --------------------------------------------------------------------------------

def test_script_parses_without_syntax_errors(root):
    assert root.type == "program"
    assert syntax_errors(root) == []


@pytest.mark.parametrize("breakage", [
    ("drop the last closing brace", lambda s: s[:s.rindex(b"}")] + s[s.rindex(b"}") + 1:]),
    ("unbalanced parenthesis in the param block", lambda s: s.replace(b"[int]$Port", b"[int]($Port", 1)),
    ("unterminated hashtable", lambda s: s.replace(b"Enabled     = 'True'\n    }", b"Enabled     = 'True'\n", 1)),
], ids=lambda b: b[0])
def test_broken_copy_is_reported(source, breakage):
    """Negative control: the syntax check above is able to fail."""
    _, breaker = breakage
    broken = breaker(source)
    assert broken != source
    assert syntax_errors(parse(broken)) != []


def test_script_is_ascii(source):
    # Windows PowerShell 5.1 reads a script without BOM as the ANSI code page: non-ASCII
    # characters in strings would come out garbled.
    source.decode("ascii")


# -- parameters and help -------------------------------------------------------------------

def test_param_block_declares_the_documented_parameters(root):
    params = script_params(root)
    assert {name: kind for name, (kind, _) in params.items()} == EXPECTED_PARAMS
    assert params["Remove"][1] is None and params["Public"][1] is None
    assert params["RuleName"][1] == '"LAN Chat Server"'


def test_port_default_is_the_server_default_port(root):
    default_port = module_constant(SERVER, "DEFAULT_PORT")
    assert isinstance(default_port, int)
    assert int(script_params(root)["Port"][1]) == default_port


def test_comment_based_help_documents_every_parameter(source, root):
    help_text = help_block(source.decode("ascii"))
    keywords = re.findall(r"^\s*\.([A-Z]+)[ \t]*(\S*)", help_text, re.M)
    sections = [k for k, _ in keywords]
    for section in ("SYNOPSIS", "DESCRIPTION", "EXAMPLE"):
        assert section in sections, section
    documented = sorted(arg for k, arg in keywords if k == "PARAMETER")
    assert documented == sorted(script_params(root))


# -- behaviour -----------------------------------------------------------------------------

def test_rule_is_inbound_tcp_allow_on_private_and_domain(root):
    body = text(function_body(root, "Set-ChatRule"))
    assert re.search(r"\$profiles = @\('Private', 'Domain'\)", body)
    # Public is only added under `if ($Public)`.
    public_ifs = [n for n in walk(function_body(root, "Set-ChatRule"))
                  if n.type == "if_statement" and text(child_of_type(n, "pipeline")) == "$Public"]
    assert len(public_ifs) == 1 and "'Public'" in text(public_ifs[0])
    assert body.count("'Public'") == 1
    for key, value in (("Direction", "'Inbound'"), ("Action", "'Allow'"), ("Protocol", "'TCP'"),
                       ("LocalPort", "$Port"), ("Profile", "$profiles"),
                       ("DisplayName", "$RuleName")):
        assert re.search(r"\b%s\s*=\s*%s\s*$" % (key, re.escape(value)), body, re.M), key
    assert [name for name, _ in commands(function_body(root, "Set-ChatRule"))
            if name == "New-NetFirewallRule"] == ["New-NetFirewallRule"]


def test_existing_rule_is_replaced_not_duplicated(root):
    names = [name for name, _ in commands(function_body(root, "Set-ChatRule"))]
    assert "Get-ChatRule" in names
    assert names.index("Get-ChatRule") < names.index("Remove-NetFirewallRule") \
        < names.index("New-NetFirewallRule")
    lookups = [args for name, args in commands(function_body(root, "Get-ChatRule"))
               if name == "Get-NetFirewallRule"]
    assert lookups == [{"-DisplayName": "$RuleName", "-ErrorAction": "SilentlyContinue"}]


def test_remove_switch_deletes_the_rule(root):
    top_level = [n for n in top_level_statements(root) if n.type == "try_statement"]
    assert len(top_level) == 1
    assert re.search(r"if \(\$Remove\) \{ Remove-ChatRule \} else \{ Set-ChatRule \}",
                     text(top_level[0]))
    names = [name for name, _ in commands(function_body(root, "Remove-ChatRule"))]
    assert "Remove-NetFirewallRule" in names and "New-NetFirewallRule" not in names


def test_relaunches_itself_elevated_with_the_same_arguments(root):
    starts = [args for name, args in commands(root) if name == "Start-Process"]
    assert len(starts) == 1
    assert starts[0]["-Verb"] == "RunAs"
    assert starts[0]["-FilePath"] == "'powershell.exe'"
    elevate = text(function_body(root, "Start-Elevated"))
    assert "$PSCommandPath" in elevate
    for forwarded in ("'-Port', $Port", "'-RuleName'", "$arguments += '-Remove'",
                      "$arguments += '-Public'"):
        assert forwarded in elevate, forwarded
    # Elevation only happens when not already administrator.
    guard = [n for n in top_level_statements(root) if n.type == "if_statement"
             and "-not (Test-Administrator)" in text(n)]
    assert len(guard) == 1 and "Start-Elevated" in text(guard[0])
    assert "WindowsBuiltInRole]::Administrator" in text(function_body(root, "Test-Administrator"))
