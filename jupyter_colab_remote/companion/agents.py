"""Run the agent's actions: over SSH on the host (RemoteAgent) or as a local process
(LocalAgent, `start` without a host). Both send one JSON request on stdin and read one JSON
line back (protocol/messages.py); secrets travel in that request only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import typing as t

from .. import __version__
from ..protocol.errors import ExitCode
from ..protocol.messages import Action, parse_answer, progress_text
from .env_file import GIT_TOKEN_VARIABLES
from .errors import CompanionError
from .gateway import GATEWAY_TOKEN_VARIABLES
from .remote import describe_python, sh_join
from .ssh_connect import SSHConnection
from .terminal_text import printable, printable_tree

#: Secrets the companion reads from its environment: the local agent does not inherit them.
SECRET_VARIABLES = frozenset(GIT_TOKEN_VARIABLES + GATEWAY_TOKEN_VARIABLES)
#: Output of the agent: return code, stdout, stderr.
RunResult = tuple[int, str, str]


def compatible(remote_version: str, local_version: str = __version__) -> bool:
    """Same major.minor: the agent protocol and the runtime file format match."""
    return remote_version.split(".")[:2] == local_version.split(".")[:2]


class Agent:
    """Runs agent actions somewhere; subclasses say where (`run`) and how to name it."""

    #: The interpreter argv that runs `-m jupyter_colab_remote`.
    prefix: list[str]
    #: Where the agent runs, for messages.
    where: str

    def run(
        self, argv: list[str], payload: bytes, timeout: float, on_stderr: t.Callable[[str], None]
    ) -> RunResult:
        """Run the agent's command line; feed `payload` on stdin; see each stderr line."""
        raise NotImplementedError

    def failure(self, error: str) -> str:
        """An error the agent answered, as the user reads it."""
        return error

    def call(
        self,
        action: Action,
        request: t.Mapping[str, t.Any] | None = None,
        progress: t.Callable[[str], None] | None = None,
        timeout: float = 90.0,
    ) -> dict[str, t.Any]:
        """Run one action and return its JSON answer, or raise a one-line error.

        `progress` receives the agent's progress lines (e.g. an image pull) as they come.
        """
        argv = [*self.prefix, "-m", "jupyter_colab_remote", "remote", action]
        payload = (json.dumps(dict(request or {})) + "\n").encode()

        def on_stderr(line: str) -> None:
            text = progress_text(line)
            if progress is not None and text is not None:
                progress(printable(text))

        rc, out, err = self.run(argv, payload, timeout, on_stderr)
        # Everything the server says reaches the terminal with control characters escaped.
        answer = printable_tree(parse_answer(out))
        if answer is not None:
            if not answer.get("ok"):
                raise CompanionError(
                    self.failure(str(answer.get("error"))), exit_code=answer.get("exit_code")
                )
            return dict(answer)
        where = f"{describe_python(self.prefix)} on {self.where}"
        if "No module named" in err:
            raise CompanionError(
                f"jupyter-colab-remote is not installed for {where}; rerun with --install "
                "(private venv on the remote) or choose an interpreter with --remote-python",
                exit_code=ExitCode.PACKAGE,
            )
        if rc == 127:
            raise CompanionError(
                f"{describe_python(self.prefix)} not found on {self.where}; set --remote-python",
                exit_code=ExitCode.PACKAGE,
            )
        last = printable((err.strip().splitlines() or ["no output"])[-1])
        raise CompanionError(f"remote command failed on {self.where} ({rc}): {last}")

    def check_version(self) -> dict[str, t.Any]:
        """`info`, refusing an incompatible agent package."""
        info = self.call("info")
        if not compatible(info["version"]):
            raise CompanionError(
                f"{self.where} has jupyter-colab-remote {info['version']}, this "
                f"machine {__version__}; rerun with --install to install a matching version",
                exit_code=ExitCode.PACKAGE,
            )
        return info


class RemoteAgent(Agent):
    """The agent on the remote host, run over an SSH exec channel."""

    def __init__(self, conn: SSHConnection, prefix: list[str]) -> None:
        self.conn = conn
        self.prefix = prefix
        self.where = conn.target.alias

    def run(
        self, argv: list[str], payload: bytes, timeout: float, on_stderr: t.Callable[[str], None]
    ) -> RunResult:
        """Run it through the server's shell (home-relative interpreter paths expand there)."""
        return self.conn.run(sh_join(argv), payload, timeout=timeout, on_stderr_line=on_stderr)

    def failure(self, error: str) -> str:
        """Say which host answered."""
        return f"on {self.where}: {error}"


def agent_environment(environ: t.Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the secrets the companion reads (git and gateway
    tokens): the local agent's runtime passes its environment on to every kernel."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in SECRET_VARIABLES}


class LocalAgent(Agent):
    """The agent as a process on this machine (`start` without a host): the same actions and
    records as over SSH, with this interpreter and a cleaned environment."""

    def __init__(self) -> None:
        self.prefix = [sys.executable]
        self.where = "this machine"

    def run(
        self, argv: list[str], payload: bytes, timeout: float, on_stderr: t.Callable[[str], None]
    ) -> RunResult:
        """Run it as a child process; its stderr lines are passed on as they come."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=agent_environment(),
        )
        out: list[bytes] = []
        err: list[str] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            out.append(proc.stdout.read())

        def read_stderr() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                err.append(line)
                on_stderr(line)

        # Daemon readers: a process the agent leaves running that holds a pipe open (an
        # engine's helper) must not hold up the answer, which is complete at the agent's exit.
        readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
        for r in readers:
            r.start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CompanionError(f"the local agent timed out after {timeout:.0f} s") from None
        finally:
            for r in readers:
                r.join(5.0)
        return rc, b"".join(out).decode(errors="replace"), "\n".join(err)
