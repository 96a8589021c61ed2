"""The server's shell and interpreter: quoting, home-relative paths, the interpreter argv."""

from __future__ import annotations

import re
import shlex

#: Where `--install` puts a private environment on the remote host.
PRIVATE_VENV = "~/.local/share/jupyter-colab-remote/venv"
#: A path the server's shell expands: `~`, `~user`, `$HOME`, `${HOME}`, each alone or before `/`.
_HOME_PATH = re.compile(r"(~[A-Za-z0-9._-]*|\$HOME|\$\{HOME\})(/.*)?", re.S)


def sh_path(word: str) -> str:
    """One word for the server's shell; a path starting with `~` or `$HOME` expands there
    (`~/venvs/ml` becomes `"$HOME"/venvs/ml`), everything else is quoted literally."""
    m = _HOME_PATH.fullmatch(word)
    if not m:
        return shlex.quote(word)
    head = '"$HOME"' if m.group(1) in ("~", "$HOME", "${HOME}") else m.group(1)
    rest = (m.group(2) or "")[1:]
    if m.group(2) is None:
        return head
    return f"{head}/{shlex.quote(rest)}" if rest else f"{head}/"


def sh_join(argv: list[str]) -> str:
    """A command line for the server's shell: shlex.join, but home-relative paths expand."""
    return " ".join(sh_path(a) for a in argv)


def remote_path(path: str, home: str) -> str:
    """A server path with a leading `~`/`$HOME` resolved against `home` (SFTP has no shell)."""
    m = _HOME_PATH.fullmatch(path)
    if not m or m.group(1) not in ("~", "$HOME", "${HOME}"):
        return path
    return home.rstrip("/") + (m.group(2) or "")


def venv_python(venv: str) -> str:
    """The interpreter of a (remote) virtual environment."""
    return venv.rstrip("/") + "/bin/python"


#: Default interpreter: the private venv if `--install` made one, else python3 on PATH.
DEFAULT_PYTHON_SH = (
    'p="$HOME/.local/share/jupyter-colab-remote/venv/bin/python"; '
    '[ -x "$p" ] || p=python3; exec "$p" "$@"'
)


def python_command(
    remote_python: str | None = None,
    venv: str | None = None,
    conda_env: str | None = None,
    uv: bool = False,
) -> list[str]:
    """The argv prefix that runs the remote interpreter the user chose."""
    if remote_python:
        return [remote_python]
    if venv:
        return [venv_python(venv)]
    if conda_env:
        return ["conda", "run", "--no-capture-output", "-n", conda_env, "python"]
    if uv:
        return ["uv", "run", "python"]
    return ["sh", "-c", DEFAULT_PYTHON_SH, "sh"]


def describe_python(prefix: list[str]) -> str:
    """A readable name for the interpreter, for messages."""
    return "python3" if prefix[:2] == ["sh", "-c"] else " ".join(prefix)
