"""Windows-like and macOS-like interpreter states for the companion, on this Linux machine.

`foreign_os_env(env, directory, kind)` writes a `sitecustomize.py` into `directory` and puts
it first on PYTHONPATH, so every Python started with the returned environment begins:

- `windows`: the POSIX-only modules (fcntl, termios, tty, pty, pwd, grp, resource, syslog,
  ...) cannot be imported by jupyter_colab_remote's own code (ModuleNotFoundError, as on
  Windows), and `socket.TCP_USER_TIMEOUT` is gone;
- `macos`: `socket.TCP_USER_TIMEOUT` is gone (macOS has no such option).

What this proves and what not, honestly: the block applies to imports made by
jupyter_colab_remote's modules (checked through `__import__`, so a module already loaded by
the standard library is refused to our code as well); third-party libraries (paramiko,
psutil, jupyter_core, tornado) keep their Linux branches, since they ship their own Windows
branches and are tested on Windows by their maintainers. OS behaviour (ACLs, msvcrt locks,
console signals) is not emulated: see tests/unit/test_portable_files.py for those branches.

Each interpreter that starts in this state appends `active KIND PID` to `marker`, so a test
can check that the process it measured really ran in it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Modules that exist only on POSIX systems (Windows has none of them).
POSIX_ONLY = (
    "fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog", "crypt", "spwd",
    "nis", "posix", "_posixsubprocess", "_posixshmem", "readline", "curses",
)  # fmt: skip

SITECUSTOMIZE = '''\
"""Test harness (tests/harness/foreign_os.py): a {kind}-like interpreter state."""
import builtins
import os
import socket

_KIND = {kind!r}
_BLOCKED = frozenset({blocked!r}) if _KIND == "windows" else frozenset()
_real_import = builtins.__import__


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = str((globals or {{}}).get("__name__", ""))
    if (
        level == 0
        and name.partition(".")[0] in _BLOCKED
        and (importer == "jupyter_colab_remote" or importer.startswith("jupyter_colab_remote."))
    ):
        raise ModuleNotFoundError(
            f"No module named {{name!r}} (Windows-like interpreter: imported by {{importer}})",
            name=name,
        )
    return _real_import(name, globals, locals, fromlist, level)


builtins.__import__ = _import
if hasattr(socket, "TCP_USER_TIMEOUT"):
    del socket.TCP_USER_TIMEOUT
_marker = os.environ.get("FOREIGN_OS_MARKER")
if _marker:
    with open(_marker, "a") as _f:
        _f.write(f"active {{_KIND}} {{os.getpid()}}\\n")
'''


def foreign_os_env(env: dict[str, str], directory: Path, kind: str) -> dict[str, str]:
    """`env` for interpreters in a `windows`- or `macos`-like state (see the module's
    docstring); the marker file is directory/marker.txt."""
    if kind not in ("windows", "macos"):
        raise ValueError(f"unknown kind {kind!r}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(kind=kind, blocked=sorted(POSIX_ONLY))
    )
    path = [str(directory), *filter(None, [env.get("PYTHONPATH")])]
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(path),
        "FOREIGN_OS_MARKER": str(directory / "marker.txt"),
    }


def marked_pids(directory: Path, kind: str) -> set[int]:
    """PIDs of the interpreters that started in that state (from the marker file)."""
    marker = directory / "marker.txt"
    if not marker.exists():
        return set()
    pids = set()
    for line in marker.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["active", kind]:
            pids.add(int(parts[2]))
    return pids
