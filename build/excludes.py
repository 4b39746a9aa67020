"""Which standard-library modules chatserver.spec leaves out of the one-file exe.

PyInstaller follows every import it can see, including optional ones inside
try/except (http.client -> ssl -> OpenSSL DLLs, hashlib -> _hashlib -> libcrypto).
Excluding what the server never uses keeps the exe small, but excluding a module the
server does import breaks it at run time. So each candidate names the imports that
need it, and is dropped from the exclude list as soon as chatserver.py imports one
of them. chatserver.py is read with ast, never imported.
"""
import ast

# Excluded unless chatserver.py imports one of the modules listed (a module counts
# as imported when it or one of its submodules is). Empty tuple = only itself.
NEEDED_BY = {
    # GUI, dev and packaging tools: a console server never needs them.
    "tkinter": (), "_tkinter": ("tkinter",), "turtle": (), "turtledemo": (),
    "idlelib": (), "unittest": ("doctest",), "doctest": (), "pdb": ("doctest",),
    "pydoc": (), "pydoc_data": ("pydoc",), "test": (), "lib2to3": (),
    "distutils": (), "setuptools": (), "pip": (), "ensurepip": (), "venv": (),
    "curses": (), "_curses": ("curses",),
    # The email package is imported at module level by http.client/http.server
    # and urllib.request (header parsing), so it stays whenever those are used.
    "email": ("http.client", "http.server", "urllib.request", "smtplib",
              "mailbox", "imaplib", "cgi", "xmlrpc"),
    # TLS: a LAN server speaking plain TCP has no use for OpenSSL (~5 MB of DLLs).
    "ssl": (), "_ssl": ("ssl",),
    # hashlib works without OpenSSL: it falls back to the built-in _sha1/_sha2/_md5
    # modules ("hashlib.sha1" for the WebSocket accept key still works).
    "_hashlib": ("ssl",),
    "xml": ("xmlrpc", "plistlib"), "pyexpat": ("xml", "xmlrpc", "plistlib"),
    "xmlrpc": (),
    "asyncio": (),
    "multiprocessing": ("concurrent",), "concurrent": (),
    "decimal": ("fractions", "statistics"), "_decimal": ("decimal", "fractions", "statistics"),
    "bz2": ("tarfile",), "_bz2": ("bz2", "tarfile"),
    "lzma": ("tarfile",), "_lzma": ("lzma", "tarfile"),
}


def imported_modules(source):
    """Every absolute module name imported anywhere in `source` (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # "from http import server" imports the submodule http.server.
            names.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return names


def _is_imported(name, imported):
    return any(m == name or m.startswith(name + ".") for m in imported)


def excludes_for(source):
    """Sorted list of modules PyInstaller may safely leave out for this source."""
    imported = imported_modules(source)
    return sorted(
        module for module, needed_by in NEEDED_BY.items()
        if not any(_is_imported(n, imported) for n in (module,) + needed_by))


def excludes_for_file(path):
    with open(path, "rb") as f:
        return excludes_for(f.read())
