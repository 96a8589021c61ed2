"""Talk to the remote agent (`python -m jupyter_colab_remote remote ACTION`) over SSH."""

from __future__ import annotations

import json
import re
import shlex
import typing as t

from .. import __version__
from ..agent.container import PROGRESS_PREFIX
from .errors import CompanionError
from .ssh_connect import SSHConnection

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


def compatible(remote_version: str, local_version: str = __version__) -> bool:
    """Same major.minor: the agent protocol and the runtime file format match."""
    return remote_version.split(".")[:2] == local_version.split(".")[:2]


class RemoteAgent:
    """Runs agent actions on the remote host; secrets go in the stdin JSON only."""

    def __init__(self, conn: SSHConnection, prefix: list[str]) -> None:
        self.conn = conn
        self.prefix = prefix

    def call(
        self,
        action: str,
        request: dict[str, t.Any] | None = None,
        progress: t.Callable[[str], None] | None = None,
        timeout: float = 90.0,
    ) -> dict[str, t.Any]:
        """Run one action and return its JSON answer, or raise a one-line error.

        `progress` receives the agent's progress lines (e.g. an image pull) as they come.
        """
        argv = [*self.prefix, "-m", "jupyter_colab_remote", "remote", action]
        command = sh_join(argv)
        payload = (json.dumps(request or {}) + "\n").encode()

        def on_stderr(line: str) -> None:
            if progress is not None and line.startswith(PROGRESS_PREFIX):
                progress(line[len(PROGRESS_PREFIX) :])

        rc, out, err = self.conn.run(command, payload, timeout=timeout, on_stderr_line=on_stderr)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if lines:
            try:
                answer = json.loads(lines[-1])
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                if not answer.get("ok"):
                    raise CompanionError(
                        f"on {self.conn.target.alias}: {answer.get('error')}",
                        exit_code=answer.get("exit_code"),
                    )
                return answer
        where = f"{describe_python(self.prefix)} on {self.conn.target.alias}"
        if "No module named jupyter_colab_remote" in err or "No module named" in err:
            raise CompanionError(
                f"jupyter-colab-remote is not installed for {where}; rerun with --install "
                "(private venv on the remote) or choose an interpreter with --remote-python",
                exit_code=7,
            )
        if rc == 127:
            raise CompanionError(
                f"{describe_python(self.prefix)} not found on "
                f"{self.conn.target.alias}; set --remote-python",
                exit_code=7,
            )
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise CompanionError(f"remote command failed on {self.conn.target.alias} ({rc}): {last}")

    def check_version(self) -> dict[str, t.Any]:
        """`info`, refusing an incompatible remote package."""
        info = self.call("info")
        if not compatible(info["version"]):
            raise CompanionError(
                f"{self.conn.target.alias} has jupyter-colab-remote {info['version']}, this "
                f"machine {__version__}; rerun with --install to install a matching version",
                exit_code=7,
            )
        return info
