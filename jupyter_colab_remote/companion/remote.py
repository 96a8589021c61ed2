"""Talk to the remote agent (`python -m jupyter_colab_remote remote ACTION`) over SSH."""

from __future__ import annotations

import json
import shlex
import typing as t

from .. import __version__
from ..server.container import PROGRESS_PREFIX
from .errors import CompanionError
from .ssh_connect import SSHConnection

#: Where `--install` puts a private environment on the remote host.
PRIVATE_VENV = "~/.local/share/jupyter-colab-remote/venv"
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
        return [venv.rstrip("/") + "/bin/python"]
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
        command = shlex.join(argv)
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

    def install(self, wheel: str | None = None) -> None:
        """Create the private venv on the remote and install this version into it."""
        venv = PRIVATE_VENV.replace("~", "$HOME", 1)
        py = f'"{venv}/bin/python"'
        if wheel:
            remote_wheel = self._upload(wheel)
            spec = shlex.quote(remote_wheel)
        else:
            spec = shlex.quote(f"jupyter-colab-remote=={__version__}")
        # The venv is made by the interpreter the user chose (python3 by default) and sees
        # its packages (torch, jax...), so kernels keep the user's libraries.
        base = shlex.join(self.prefix)
        script = (
            f'set -e; [ -x {py} ] || {base} -m venv --system-site-packages "{venv}"; '
            # The package itself goes into the venv even if the base interpreter has a copy;
            # then its dependencies, from the base's site packages where they are already.
            f"{py} -m pip install -q --disable-pip-version-check --ignore-installed --no-deps "
            f"{spec}; {py} -m pip install -q --disable-pip-version-check {spec}"
        )
        rc, _, err = self.conn.run(f"sh -c {shlex.quote(script)}", timeout=900)
        if rc != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise CompanionError(f"installing on {self.conn.target.alias} failed: {last}")
        self.prefix = python_command()

    def _upload(self, wheel: str) -> str:
        """Copy a local wheel to the remote over SFTP (for hosts without index access)."""
        import os

        sftp = self.conn.transport.open_sftp_client()
        try:
            home = sftp.normalize(".")
            target = f"{home}/.cache/jupyter-colab-remote"
            for d in (f"{home}/.cache", target):
                try:
                    sftp.stat(d)
                except OSError:
                    sftp.mkdir(d, 0o700)
            remote = f"{target}/{os.path.basename(wheel)}"
            sftp.put(wheel, remote)
            return remote
        finally:
            sftp.close()
